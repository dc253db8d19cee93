"""The standalone server driven by imapclient, including two sessions on one mailbox."""

from __future__ import annotations

import ssl

import pytest
from imapclient import IMAPClient

from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.messages import MULTIPART, SIMPLE

pytestmark = pytest.mark.integration


def connect(server: RunningServer) -> IMAPClient:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=30)
    client.starttls(ctx)
    client.login("alice@example.org", PASSWORD)
    return client


def test_append_fetch_search_move(server: RunningServer) -> None:
    """imapclient's high-level calls round-trip a message through APPEND, FETCH, SEARCH, MOVE."""
    client = connect(server)
    assert b"MOVE" in client.capabilities() and b"UIDPLUS" in client.capabilities()
    client.append("INBOX", MULTIPART, flags=[b"\\Draft"])
    client.select_folder("INBOX")
    uids = client.search(["SUBJECT", "Holiday"])
    assert len(uids) == 1
    fetched = client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"])
    item = fetched[uids[0]]
    assert item[b"BODY[]"] == MULTIPART
    assert item[b"RFC822.SIZE"] == len(MULTIPART)
    assert b"\\Draft" in item[b"FLAGS"]
    structure = item[b"BODYSTRUCTURE"]
    assert structure.is_multipart
    client.create_folder("Photos & Co.")
    client.move(uids, "Photos & Co.")
    assert client.search(["ALL"]) == []
    client.select_folder("Photos & Co.")
    moved = client.search(["ALL"])
    assert client.fetch(moved, ["BODY.PEEK[]"])[moved[0]][b"BODY[]"] == MULTIPART
    names = [name for _, _, name in client.list_folders()]
    assert "Photos & Co." in names
    client.logout()


def test_unicode_mailbox_names(server: RunningServer) -> None:
    """Modified UTF-7 mailbox names round-trip through CREATE, LIST and SELECT."""
    client = connect(server)
    client.create_folder("Entwürfe/Geschäftlich")
    names = [name for _, _, name in client.list_folders()]
    assert "Entwürfe/Geschäftlich" in names
    client.select_folder("Entwürfe/Geschäftlich")
    client.logout()


def test_changes_reach_the_other_session(server: RunningServer) -> None:
    """An APPEND, flag change and EXPUNGE in one session are reported to another at NOOP."""
    a = connect(server)
    b = connect(server)
    a.use_uid = b.use_uid = False  # this test speaks of sequence numbers
    a.append("INBOX", SIMPLE)
    a.append("INBOX", MULTIPART)
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    a.append("INBOX", SIMPLE)
    _, responses = b.noop()
    assert (3, b"EXISTS") in responses
    a.add_flags([1], [b"\\Flagged"])
    _, responses = b.noop()
    assert any(r[1] == b"FETCH" and b"\\Flagged" in repr(r).encode() for r in responses), responses
    a.delete_messages([1])
    a.expunge()
    _, responses = b.noop()
    assert (1, b"EXPUNGE") in responses
    # b's sequence numbers now agree with a's: message 1 is the multipart one.
    assert b.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"] == MULTIPART
    a.logout()
    b.logout()


def test_idle_reports_new_mail(server: RunningServer) -> None:
    """A session in IDLE is told of a message another session appends."""
    a = connect(server)
    b = connect(server)
    b.select_folder("INBOX")
    b.idle()
    a.append("INBOX", SIMPLE)
    responses = b.idle_check(timeout=10)
    b.idle_done()
    assert (1, b"EXISTS") in responses
    a.logout()
    b.logout()
