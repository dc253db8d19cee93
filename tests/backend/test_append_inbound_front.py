"""APPEND through the front takes the server's inbound path (issue 11 with issue 16).

The front is the whole IMAP server with a backend store, so an APPEND runs
:meth:`transcoder.imap.transfer.TransferMixin._append` as on the built-in
store: a message encrypted to the server's key is decrypted before it goes
to Dovecot (which then holds -- and searches -- plaintext), and with
``--clamd`` every message is scanned first (infected: ``NO [CANNOT]``,
nothing reaches Dovecot).  Checked directly in Dovecot, with ciphertext made
by ``openssl cms -encrypt`` and a real clamd.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.conftest import USERS
from tests.backend.front import direct_login, running_front
from tests.integration.conftest import RunningServer
from tests.integration.test_append_scan import encrypted_eicar
from tests.integration.test_encrypted_append import openssl_encrypted, server_keys
from tests.scan.clamd_fixture import EICAR, EICAR_FOUND, Clamd, running_clamd
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"


@pytest.fixture(scope="module")
def clamd() -> Iterator[Clamd]:
    with running_clamd() as running:
        yield running


@pytest.fixture(scope="module")
def front(dovecot: DovecotInstance, clamd: Clamd) -> Iterator[RunningServer]:
    with running_front(dovecot, "--clamd", clamd.address) as server:
        yield server


def _append(front: RunningServer, message: bytes, mailbox: str = "Archive") -> tuple[str, str]:
    imap = imaplib.IMAP4("127.0.0.1", front.imap_port)
    try:
        imap.login(ALICE, USERS[ALICE])
        typ, data = imap.append(mailbox, None, None, message)
    finally:
        imap.logout()
    return typ, data[-1].decode() if data and data[-1] else ""


def _in_dovecot(dovecot: DovecotInstance, marker: str) -> list[bytes]:
    """The messages of alice's Archive, read directly from Dovecot, holding ``marker``."""
    direct = direct_login(dovecot, ALICE, "Archive")
    try:
        typ, data = direct.uid("SEARCH", "BODY", marker)
        assert typ == "OK", data
        found = []
        for uid in data[0].split():
            typ, fetched = direct.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            found.append(fetched[0][1])
        return found
    finally:
        direct.logout()


def test_append_encrypted_to_the_server_reaches_dovecot_in_clear(
    front: RunningServer, dovecot: DovecotInstance, tmp_path: Path
) -> None:
    """openssl cms -encrypt to the front's server certificate: Dovecot stores (and its SEARCH
    BODY finds) the decrypted entity, not the ciphertext."""
    keys = server_keys(front, tmp_path / "keys")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    encrypted = openssl_encrypted(keys["SMIME-ENCRYPT"], "front-inbound", "aes-256-cbc", hidden)
    assert b"front-inbound" not in encrypted
    typ, text = _append(front, encrypted)
    assert typ == "OK" and "APPENDUID" in text, text
    (stored,) = _in_dovecot(dovecot, "front-inbound")
    assert b"the marker is front-inbound" in stored
    assert b"pkcs7-mime" not in stored


def test_clamd_refuses_eicar_before_dovecot(
    front: RunningServer, dovecot: DovecotInstance, tmp_path: Path
) -> None:
    """EICAR, in clear or encrypted to the server: NO [CANNOT] message refused, nothing in
    Dovecot; a clean message passes."""
    plain = b"Subject: eicar-front\r\n\r\n" + EICAR + b"\r\n"
    typ, text = _append(front, plain)
    assert typ == "NO" and text == f"[CANNOT] message refused: {EICAR_FOUND}", text
    keys = server_keys(front, tmp_path / "keys")
    typ, text = _append(front, encrypted_eicar(keys["SMIME-ENCRYPT"], tmp_path))
    assert typ == "NO" and EICAR_FOUND in text, text
    assert _in_dovecot(dovecot, "EICAR") == []
    typ, text = _append(front, b"Subject: clean-front\r\n\r\nclean-front body\r\n")
    assert typ == "OK", text
    assert len(_in_dovecot(dovecot, "clean-front")) == 1
