"""Encrypted APPEND with the keystore on a real PostgreSQL (issues 14 and 16): the
decryption is a row of the shared ``audit`` table (``transcoder-admin --keystore ... audit
list`` shows it), and with PostgreSQL down an APPEND that would be decrypted fails closed
with ``NO [UNAVAILABLE]`` and nothing is stored -- no decryption goes unrecorded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import admin
from tests.integration.test_encrypted_append import (
    ALICE,
    append,
    login,
    openssl_encrypted,
    server_keys,
    stored_files,
)
from tests.integration.transcoding import running_server
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgresql() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, to stop while the front runs."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def audited(data: Path, dsn: str) -> list[dict[str, object]]:
    listed = admin(data, "--keystore", dsn, "audit", "list", ALICE)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_decryption_is_in_the_shared_audit_table_and_fails_closed_without_it(
    tmp_path: Path, own_postgresql: PostgresServer
) -> None:
    dsn = own_postgresql.new_database()
    with running_server(tmp_path, [ALICE], ["--keystore", dsn]) as server:
        keys = server_keys(server, tmp_path / "keys")
        imap = login(server)
        try:
            message = openssl_encrypted(
                keys["SMIME-ENCRYPT"], "pg-audited", "aes-256-cbc", tmp_path
            )
            typ, text = append(imap, message)
            assert typ == "OK" and re.search(r"\[APPENDUID \d+ 1\]", text), text
            (record,) = [r for r in audited(server.data, dsn) if r["event"] == "append-decrypted"]
            assert (record["via"], record["format"]) == ("imap", "SMIME")
            assert str(record["peer"]).startswith("127.0.0.1")
            assert not (server.data / "audit.jsonl").exists()  # the table is the trail

            own_postgresql.stop()
            typ, text = append(
                imap, openssl_encrypted(keys["SMIME-ENCRYPT"], "down", "aes-256-cbc", tmp_path)
            )
            assert typ == "NO" and "[UNAVAILABLE]" in text, (typ, text)
            assert len(stored_files(server)) == 1  # the first message only
            typ, data = imap.noop()
            assert typ == "OK", data  # the session goes on
        finally:
            imap.logout()
