"""Signed views with the keystore on a real PostgreSQL (issue 16): the account's SIGN is
kept there -- across a restart, shown by transcoder-admin --keystore -- and the view
signed under it verifies with openssl against the published signing certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import make_party
from tests.integration.conftest import admin
from tests.integration.messages import SIMPLE
from tests.integration.test_signed_views import (
    USER,
    SignedServer,
    sign_policy,
    signed_content,
    views,
)
from tests.integration.transcoding import (
    SMIME,
    append,
    check_inner,
    login,
    provision,
    running_server,
)
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_sign_on_is_kept_in_postgresql(tmp_path: Path, postgresql: PostgresServer) -> None:
    """SIGN ON set over XKEY lands in PostgreSQL: after a restart the view is still signed
    (the same octets) and verifies; transcoder-admin --keystore shows SIGN ON."""
    dsn = postgresql.new_database()
    with running_server(tmp_path, [USER], ["--keystore", dsn]) as server:
        imap = login(server, USER)
        assert append(imap, SIMPLE) == 1
        imap.logout()
        party = make_party(tmp_path, "signed", rsa.generate_private_key(65537, 2048))
        provision(server, USER, party.cert_der, SMIME)
        assert b"SIGN ON" in sign_policy(server, "ON")
        signed = SignedServer(server, party, tmp_path)
        before = views(server, 1)[1]
        server.restart()
        after = views(server, 1)[1]
        assert after == before
        content = signed_content(signed, after, signed.signing_cert("keys"))
        check_inner(content, SIMPLE, after)
        shown = admin(server.data, "--keystore", dsn, "policy", USER)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.endswith(" SIGN ON\n"), shown.stdout
