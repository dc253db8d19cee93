"""The virus scan of delivered mail on the real server (issue 16): with --clamd, the EICAR
file delivered into new/ never reaches an IDLEing or SELECTing imaplib client and lands in
DIR/quarantine/, logged and audited; so does EICAR encrypted (openssl cms) to the key from
XKEY SERVER; clean mail is served; clamd stopped holds delivered mail back until it is
restarted; a sweep (--delivery-scan-interval) quarantines EICAR while nobody is logged in;
without --clamd nothing is scanned."""

from __future__ import annotations

import imaplib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from tests.integration.test_encrypted_append import server_keys
from tests.scan.clamd_fixture import EICAR, EICAR_FOUND, Clamd, running_clamd

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"
INFECTED = b"Subject: infected\r\n\r\n" + EICAR + b"\r\n"
CLEAN = b"Subject: clean\r\n\r\nclean-delivery-marker\r\n"
WAIT = 60.0


@pytest.fixture
def clamd() -> Iterator[Clamd]:
    with running_clamd() as running:
        yield running


def start_server(tmp_path: Path, *extra: str) -> RunningServer:
    data = tmp_path / "data"
    assert admin(data, "user", "add", ALICE, stdin=PASSWORD + "\n").returncode == 0
    running = RunningServer(data, free_port(), free_port(), extra)
    running.start()
    return running


@pytest.fixture
def scanning(tmp_path: Path, clamd: Clamd) -> Iterator[RunningServer]:
    """A server scanning with the test's clamd; account alice."""
    running = start_server(tmp_path, "--clamd", clamd.address)
    try:
        yield running
    finally:
        running.stop()


def deliver(server: RunningServer, message: bytes) -> str:
    """Deliver as an MDA does (tmp/, then a rename into new/); the file's name."""
    maildir = server.data / "mail" / ALICE
    name = f"{time.time_ns()}.M1P{os.getpid()}.test"
    (maildir / "tmp" / name).write_bytes(message)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)
    return name


def login(server: RunningServer) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=WAIT)
    imap.login(ALICE, PASSWORD)
    return imap


def until(condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition`` (not a timed assertion: the deadline only ends a hang)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


def messages(imap: imaplib.IMAP4) -> list[bytes]:
    """Every message of the selected mailbox as the client sees it (after a NOOP)."""
    imap.noop()
    typ, data = imap.uid("SEARCH", "ALL")
    assert typ == "OK"
    uids = data[0].split()
    if not uids:
        return []
    typ, fetched = imap.uid("FETCH", b",".join(uids).decode(), "(BODY.PEEK[])")
    return [part[1] for part in fetched if isinstance(part, tuple)]


def quarantined(server: RunningServer, name: str) -> Path:
    return server.data / "quarantine" / ALICE / name


def test_eicar_delivered_never_reaches_idle_or_select(scanning: RunningServer) -> None:
    """An IDLEing client is told of the clean delivery only, a SELECTing one sees only it;
    the EICAR file is in DIR/quarantine/<account>/, in the log (signature, account, file)
    and in audit.jsonl as delivery-quarantined."""
    idler = login(scanning)
    idler.select("INBOX")
    idler.send(b"i1 IDLE\r\n")
    assert idler.readline().startswith(b"+")
    bad = deliver(scanning, INFECTED)
    until(lambda: quarantined(scanning, bad).exists(), "the EICAR file in quarantine")
    deliver(scanning, CLEAN)
    told = []
    while b"EXISTS" not in (told[-1] if told else b""):
        told.append(idler.readline())
    idler.send(b"DONE\r\n")
    while not (line := idler.readline()).startswith(b"i1 "):
        told.append(line)
    assert b"* 1 EXISTS\r\n" in told and not any(b"2 EXISTS" in line for line in told), told
    assert messages(idler) == [CLEAN]
    idler.logout()
    other = login(scanning)
    typ, data = other.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    assert messages(other) == [CLEAN]
    other.logout()
    assert quarantined(scanning, bad).read_bytes() == INFECTED
    log = scanning.log.read_text()
    assert f"quarantined: {EICAR_FOUND} in {bad} of {ALICE}" in log, log[-3000:]
    audit = [json.loads(line)["audit"] for line in (scanning.data / "audit.jsonl").open()]
    assert {"event": "delivery-quarantined", "account": ALICE, "file": bad}.items() <= next(
        a for a in audit if a["event"] == "delivery-quarantined"
    ).items()


def test_encrypted_eicar_delivered_is_quarantined(scanning: RunningServer, tmp_path: Path) -> None:
    """EICAR encrypted with openssl cms to the key transcoder-client server-keys saved: the
    server decrypts it for the scan and quarantines it; a clean delivery after it is served."""
    keys = server_keys(scanning, tmp_path / "keys")
    (tmp_path / "eicar.txt").write_bytes(b"Content-Type: text/plain\r\n\r\n" + EICAR + b"\r\n")
    cms = ["openssl", "cms", "-encrypt", "-binary", "-aes-256-cbc"]
    body = subprocess.run(
        [*cms, "-in", str(tmp_path / "eicar.txt"), str(keys["SMIME-ENCRYPT"])],
        capture_output=True,
        check=True,
    ).stdout
    encrypted = b"From: mallory@example.net\r\nSubject: invoice\r\n" + body
    assert EICAR not in encrypted
    imap = login(scanning)
    imap.select("INBOX")
    bad = deliver(scanning, encrypted)
    # The pickup runs when a session looks at the mailbox: here, at each NOOP.
    until(
        lambda: imap.noop() and quarantined(scanning, bad).exists(),
        "the encrypted EICAR in quarantine",
    )
    deliver(scanning, CLEAN)
    until(lambda: messages(imap) == [CLEAN], "the clean delivery")
    imap.logout()
    assert quarantined(scanning, bad).read_bytes() == encrypted


def test_clamd_stopped_holds_delivery_until_restarted(
    scanning: RunningServer, clamd: Clamd
) -> None:
    """clamd stopped: a clean delivery stays in new/, unseen, the outage logged once however
    often the client polls; clamd restarted: the message is served after the retry."""
    clamd.stop()
    imap = login(scanning)
    imap.select("INBOX")
    name = deliver(scanning, CLEAN)
    until(lambda: imap.noop() and "unavailable" in scanning.log.read_text(), "the outage")
    for _ in range(5):
        assert messages(imap) == []
    assert (scanning.data / "mail" / ALICE / "new" / name).exists()
    clamd.start()
    until(lambda: messages(imap) == [CLEAN], "the delivery after clamd's restart")
    imap.logout()
    log = scanning.log.read_text()
    assert log.count("delivered mail stays in new/") == 1, log[-3000:]
    assert "answers again" in log


def test_eicar_delivered_while_nobody_is_logged_in_is_quarantined(
    tmp_path: Path, clamd: Clamd
) -> None:
    """With --delivery-scan-interval 1 and no IMAP session at all, EICAR delivered into new/
    is in DIR/quarantine/ by the next sweep, logged and audited; the clean delivery beside
    it stays in new/ until alice looks, and then she sees it."""
    server = start_server(tmp_path, "--clamd", clamd.address, "--delivery-scan-interval", "1")
    try:
        bad = deliver(server, INFECTED)
        good = deliver(server, CLEAN)
        until(lambda: quarantined(server, bad).exists(), "the sweep's quarantine")
        assert (server.data / "mail" / ALICE / "new" / good).exists()
        audit = [json.loads(line)["audit"] for line in (server.data / "audit.jsonl").open()]
        assert any(a["event"] == "delivery-quarantined" and a["file"] == bad for a in audit)
        imap = login(server)
        imap.select("INBOX")
        until(lambda: messages(imap) == [CLEAN], "the clean delivery")
        imap.logout()
    finally:
        server.stop()
    assert f"quarantined: {EICAR_FOUND} in {bad} of {ALICE}" in server.log.read_text()


def test_without_clamd_nothing_is_scanned(tmp_path: Path) -> None:
    """No --clamd: the EICAR file delivered is served as any message; no quarantine."""
    server = start_server(tmp_path)
    try:
        deliver(server, INFECTED)
        imap = login(server)
        imap.select("INBOX")
        assert messages(imap) == [INFECTED]
        imap.logout()
    finally:
        server.stop()
    assert not (server.data / "quarantine").exists()
