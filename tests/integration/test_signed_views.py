"""Signed S/MIME views on the real server (issue 16), fetched with imaplib.

A user with an RSA certificate sets ``XKEY POLICY SIGN ON``; the server's
signing certificate is taken from ``XKEY SERVER`` (``transcoder-client
server-keys``), as a user would.  Then:

* ``openssl cms -decrypt`` opens every view; what it gives is a
  multipart/signed that ``openssl cms -verify`` and ``openssl smime -verify``
  accept against the published signing certificate, and whose signed content
  is the protected inner entity; RFC822.SIZE and BODYSTRUCTURE describe the
  served octets exactly;
* a flipped octet of the signed content fails verification;
* the octets are the same in two sessions and after a restart with the view
  cache deleted;
* ``SIGN OFF`` serves unsigned views (and a new UIDVALIDITY), ``SIGN ON`` the
  same signed octets as before;
* after ``transcoder-admin server-key rotate smime`` a selected session is
  ended, the UIDVALIDITY moves, and views verify with the new signing
  certificate only;
* ``--sign-views`` signs for accounts that did not choose, and
  ``transcoder-admin policy`` says so;
* dual key pairs: a message encrypted to the signing certificate is not
  decrypted by the server (the signing key never decrypts).
"""

from __future__ import annotations

import imaplib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import Party, make_party
from tests.integration.conftest import RunningServer, admin
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.test_client import client
from tests.integration.transcoding import (
    SMIME,
    append,
    check_bodystructure,
    check_inner,
    fetch_body,
    fetch_parsed,
    login,
    openssl_decrypt,
    provision,
    running_server,
    with_attachment,
)
from tests.signing.signed_views import openssl, signer_of, verify

pytestmark = pytest.mark.integration

USER = "signed@example.org"
MESSAGES = (SIMPLE, MULTIPART, with_attachment("MARKER-16"))


@dataclass
class SignedServer:
    """A running server with the user's mail under SIGN ON, the user's key, and its folder."""

    server: RunningServer
    party: Party
    root: Path

    def signing_cert(self, name: str) -> bytes:
        """The S/MIME signing certificate XKEY SERVER publishes now (PEM), saved by the client."""
        folder = self.root / name
        done = client(self.server, "server-keys", "--dir", str(folder), "--json", user=USER)
        assert done.returncode == 0, done.stderr
        (entry,) = [
            k for k in json.loads(done.stdout) if k["format"] == "SMIME" and k["usage"] == ["SIGN"]
        ]
        return Path(str(entry["file"])).read_bytes()


def sign_policy(server: RunningServer, value: str) -> bytes:
    """``XKEY POLICY SIGN value`` for the user: the untagged policy response."""
    imap = login(server, USER, None)
    try:
        typ, data = imap.xatom("XKEY", "POLICY", "SIGN", value)
        assert typ == "OK", data
        return b" ".join(bytes(d) for d in imap.untagged_responses.get("XKEY", []))
    finally:
        imap.logout()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedServer]:
    """A server with three messages for USER, an RSA-3072 certificate and SIGN ON."""
    root = tmp_path_factory.mktemp("signed-smime")
    with running_server(root, [USER]) as server:
        imap = login(server, USER)
        assert [append(imap, m) for m in MESSAGES] == [1, 2, 3]
        imap.logout()
        party = make_party(root, "signed", rsa.generate_private_key(65537, 3072))
        provision(server, USER, party.cert_der, SMIME)
        assert b"SIGN ON" in sign_policy(server, "ON")
        yield SignedServer(server, party, root)


def views(server: RunningServer, count: int = len(MESSAGES)) -> dict[int, bytes]:
    """``BODY[]`` of messages 1..count, RFC822.SIZE and BODYSTRUCTURE checked against it."""
    imap = login(server, USER)
    found = {}
    for uid in range(1, count + 1):
        described = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        view = fetch_body(imap, uid)
        assert described[b"RFC822.SIZE"] == len(view)
        check_bodystructure(described[b"BODYSTRUCTURE"], view)
        found[uid] = view
    imap.logout()
    return found


def uidvalidity(server: RunningServer) -> int:
    """The UIDVALIDITY SELECT INBOX presents to USER now."""
    imap = login(server, USER, None)
    typ, data = imap.select("INBOX")
    assert typ == "OK", data
    value = int(imap.untagged_responses["UIDVALIDITY"][0])
    imap.logout()
    return value


def signed_content(signed: SignedServer, view: bytes, cert_pem: bytes) -> bytes:
    """Decrypt ``view`` with openssl, verify it with openssl (cms and smime) against
    ``cert_pem``: the signed content (``b""`` when either verification fails)."""
    workdir = signed.root / "work"
    workdir.mkdir(exist_ok=True)
    inner = openssl_decrypt(view, signed.party, workdir)
    assert inner.startswith(b"Content-Type: multipart/signed;"), inner[:200]
    by_cms = verify(inner, cert_pem, workdir, "cms")
    by_smime = verify(inner, cert_pem, workdir, "smime")
    return by_cms if by_cms == by_smime else b""


def test_openssl_decrypts_and_verifies_against_the_published_certificate(
    signed: SignedServer,
) -> None:
    """Every view decrypts with openssl to a multipart/signed verified by openssl cms and
    smime against XKEY SERVER's signing certificate, which is also the signer it names;
    the signed content is the protected message."""
    cert = signed.signing_cert("keys")
    for uid, view in views(signed.server).items():
        assert b"MARKER-16" not in view
        content = signed_content(signed, view, cert)
        check_inner(content, MESSAGES[uid - 1], view)
        workdir = signed.root / "work"
        inner = openssl_decrypt(view, signed.party, workdir)
        named = signer_of(inner, workdir).public_bytes(serialization.Encoding.PEM)
        assert named == x509.load_pem_x509_certificate(cert).public_bytes(
            serialization.Encoding.PEM
        )


def test_a_flipped_octet_fails_verification(signed: SignedServer) -> None:
    """One octet of the signed content changed: openssl cms -verify refuses it."""
    cert = signed.signing_cert("keys-flip")
    workdir = signed.root / "work"
    workdir.mkdir(exist_ok=True)
    inner = openssl_decrypt(views(signed.server)[1], signed.party, workdir)
    assert verify(inner, cert, workdir)
    at = inner.index(b"The numbers are in.")
    tampered = inner[:at] + b"t" + inner[at + 1 :]
    assert verify(tampered, cert, workdir) == b""
    assert verify(tampered, cert, workdir, "smime") == b""


def test_byte_stable_across_sessions_and_a_restart(signed: SignedServer) -> None:
    """Two sessions serve the same octets; so does a restart with the view cache deleted."""
    before = views(signed.server)
    assert views(signed.server) == before
    signed.server.stop()
    shutil.rmtree(signed.server.data / "views", ignore_errors=True)
    signed.server.start()
    assert views(signed.server) == before


def test_sign_off_serves_unsigned_views_under_a_new_uidvalidity(signed: SignedServer) -> None:
    """SIGN OFF: a new UIDVALIDITY, views that decrypt to the message itself (no signature);
    SIGN ON again: another UIDVALIDITY and the signed octets of before."""
    with_signature = views(signed.server)
    first = uidvalidity(signed.server)
    assert b"SIGN OFF" in sign_policy(signed.server, "OFF")
    try:
        assert uidvalidity(signed.server) > first
        workdir = signed.root / "work"
        workdir.mkdir(exist_ok=True)
        for uid, view in views(signed.server).items():
            assert view != with_signature[uid]
            check_inner(openssl_decrypt(view, signed.party, workdir), MESSAGES[uid - 1], view)
    finally:
        sign_policy(signed.server, "ON")
    assert views(signed.server) == with_signature


def test_rotation_signs_with_the_new_key_and_ends_selected_sessions(signed: SignedServer) -> None:
    """server-key rotate smime (another process, server running): a selected session is
    ended with BYE at its next command, the UIDVALIDITY moves, the new views verify
    against the new signing certificate and not the old one."""
    old_cert = signed.signing_cert("before-rotation")
    before = views(signed.server)
    first = uidvalidity(signed.server)
    selected = login(signed.server, USER)
    rotated = admin(signed.server.data, "server-key", "rotate", "smime", "--algorithm", "rsa")
    assert rotated.returncode == 0, rotated.stderr
    with pytest.raises(imaplib.IMAP4.abort):
        selected.uid("FETCH", "1", "(RFC822.SIZE)")
        selected.noop()
    assert uidvalidity(signed.server) > first
    new_cert = signed.signing_cert("after-rotation")
    assert new_cert != old_cert
    after = views(signed.server)
    for uid, view in after.items():
        assert view != before[uid]
        check_inner(signed_content(signed, view, new_cert), MESSAGES[uid - 1], view)
        assert signed_content(signed, view, old_cert) == b""
    retired = [ln for ln in admin(signed.server.data, "server-key", "list").stdout.splitlines()]
    assert any(" SIGN " in ln and " retired " in ln for ln in retired), retired


def test_signing_key_does_not_decrypt_appends(signed: SignedServer) -> None:
    """A message encrypted with openssl to the server's signing certificate is not opened
    by the server: refused, or stored as sent -- never in plaintext."""
    cert = signed.signing_cert("keys-dual")
    workdir = signed.root / "work"
    workdir.mkdir(exist_ok=True)
    (workdir / "sign.pem").write_bytes(cert)
    (workdir / "plain.eml").write_bytes(with_attachment("DUAL-MARKER"))
    done = openssl(
        "cms", "-encrypt", "-in", str(workdir / "plain.eml"), "-aes256",
        "-subject", "to the signing key", str(workdir / "sign.pem"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imap = login(signed.server, USER)
    try:
        typ, data = imap.append("INBOX", None, None, done.stdout)
        if typ == "OK":
            typ, found = imap.uid("SEARCH", "BODY", "DUAL-MARKER")
            assert typ == "OK" and found == [b""], found
            stored = b"".join(p.read_bytes() for p in (signed.server.data / "mail").rglob("*,*"))
            assert b"DUAL-MARKER" not in stored
        else:
            assert re.search(rb"\[CANNOT\]", data[0]), data
    finally:
        imap.logout()


def test_server_default_signs_accounts_that_did_not_choose(tmp_path: Path) -> None:
    """--sign-views: an account with no SIGN of its own gets signed views, XKEY POLICY and
    transcoder-admin policy say SIGN ON (the latter: the server default)."""
    with running_server(tmp_path, [USER], ["--sign-views"]) as server:
        imap = login(server, USER)
        assert append(imap, SIMPLE) == 1
        imap.logout()
        party = make_party(tmp_path, "signed", rsa.generate_private_key(65537, 3072))
        provision(server, USER, party.cert_der, SMIME)
        shown = admin(server.data, "policy", USER)
        assert shown.stdout.endswith(" SIGN ON (server default)\n"), shown
        signed = SignedServer(server, party, tmp_path)
        view = views(server, 1)[1]
        check_inner(signed_content(signed, view, signed.signing_cert("keys")), SIMPLE, view)
        imap = login(server, USER, None)
        typ, _ = imap.xatom("XKEY", "POLICY")
        assert typ == "OK"
        assert b"SIGN ON" in b" ".join(imap.untagged_responses.get("XKEY", []))
        imap.logout()
