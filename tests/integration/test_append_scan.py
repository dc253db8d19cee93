"""The gateway virus scan on the real server (issue 16): with --clamd, the EICAR file in
clear and inside an APPEND encrypted to the server's key (openssl cms -encrypt) is refused
NO [CANNOT] naming the signature and not stored; a clean message passes; with clamd
stopped, APPEND fails closed NO [UNAVAILABLE] and nothing is stored."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from tests.integration.test_encrypted_append import openssl_encrypted, server_keys
from tests.scan.clamd_fixture import EICAR, EICAR_FOUND, Clamd, running_clamd

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"


@pytest.fixture
def clamd() -> Iterator[Clamd]:
    with running_clamd() as running:
        yield running


@pytest.fixture
def server(tmp_path: Path, clamd: Clamd) -> Iterator[RunningServer]:
    """A server scanning with the test's clamd; accounts alice and bob."""
    data = tmp_path / "data"
    for address in (ALICE, "bob@example.org"):
        assert admin(data, "user", "add", address, stdin=PASSWORD + "\n").returncode == 0
    running = RunningServer(data, free_port(), free_port(), ("--clamd", clamd.address))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def append(server: RunningServer, message: bytes) -> tuple[str, str]:
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
    try:
        imap.login(ALICE, PASSWORD)
        typ, data = imap.append("INBOX", None, None, message)
    finally:
        imap.logout()
    return typ, data[-1].decode() if data and data[-1] else ""


def stored(server: RunningServer) -> list[bytes]:
    cur = server.data / "mail" / ALICE / "cur"
    return [p.read_bytes() for p in sorted(cur.iterdir())]


def test_eicar_refused_in_clear_and_encrypted_clean_passes(
    server: RunningServer, tmp_path: Path
) -> None:
    """EICAR in clear and encrypted to the server: NO [CANNOT] message refused: <name>,
    nothing stored; a clean encrypted message is stored (decrypted)."""
    plain = b"Subject: test\r\n\r\n" + EICAR + b"\r\n"
    typ, text = append(server, plain)
    assert typ == "NO" and text == f"[CANNOT] message refused: {EICAR_FOUND}", text
    keys = server_keys(server, tmp_path / "keys")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    encrypted = openssl_encrypted(keys["SMIME-ENCRYPT"], "clean-marker", "aes-256-cbc", hidden)
    infected = encrypted_eicar(keys["SMIME-ENCRYPT"], tmp_path)
    assert EICAR not in infected
    typ, text = append(server, infected)
    assert typ == "NO" and EICAR_FOUND in text, text
    assert stored(server) == []
    typ, text = append(server, encrypted)
    assert typ == "OK", text
    (only,) = stored(server)
    assert b"clean-marker" in only


def encrypted_eicar(cert: Path, tmp_path: Path) -> bytes:
    import subprocess

    entity = tmp_path / "eicar.txt"
    entity.write_bytes(b"Content-Type: text/plain\r\n\r\n" + EICAR + b"\r\n")
    out = subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", "-aes-256-gcm", "-in", str(entity), str(cert)],
        capture_output=True,
        check=True,
    ).stdout
    return b"Subject: eicar\r\n" + out


def test_clamd_stopped_fails_closed(server: RunningServer, clamd: Clamd) -> None:
    """clamd down: a clean APPEND is NO [UNAVAILABLE] and nothing is stored."""
    clamd.stop()
    typ, text = append(server, b"Subject: clean\r\n\r\nnothing to see\r\n")
    assert typ == "NO" and text.startswith("[UNAVAILABLE]"), text
    assert stored(server) == []
