"""Pipelined commands against the real server: answered in order, EXPUNGE only where allowed.

Issue 10 item 1: with pipelining, the server completed a later APPEND
before an earlier STORE and sent another session's ``* n EXPUNGE`` while
that STORE was outstanding (RFC 3501 sections 5.5 and 7.4.1).  Here one
client, on a raw socket, writes a round the way a pipelining client may
(commands naming sequence numbers first, RFC 3501 section 5.5) while
another session of the same account expunges, and checks every response
against its model of the mailbox (:mod:`tests.imap.client_model`).
"""

from __future__ import annotations

import imaplib
import socket
import time

from tests.imap.client_model import ClientModel
from tests.integration.conftest import PASSWORD, RunningServer

ADDRESS = "alice@example.org"
MESSAGE = b"From: bob@example.org\r\nSubject: pipelined\r\n\r\nbody\r\n"


def answered(sock: socket.socket, model: ClientModel, commands: list[tuple[bytes, bytes]]) -> None:
    """Send ``commands`` in one write; read until each has its tagged response."""
    sock.sendall(model.pipeline(commands))
    deadline = time.monotonic() + 60
    while model.in_progress:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(65536)
        assert data, f"connection closed with {model.in_progress} unanswered"
        model.read(data)


def test_pipelined_round_keeps_order_while_another_session_expunges(
    server: RunningServer,
) -> None:
    """FETCH, FETCH, STORE, SEARCH, APPEND, EXPUNGE, UID FETCH, NOOP: in order, numbers in step."""
    other = imaplib.IMAP4("127.0.0.1", server.imap_port)
    other.login(ADDRESS, PASSWORD)
    for _ in range(30):
        other.append("INBOX", None, None, MESSAGE)
    other.select("INBOX")
    with socket.create_connection(("127.0.0.1", server.imap_port), timeout=30) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        model = ClientModel()
        answered(sock, model, [(b"l", b'LOGIN %s "%s"' % (ADDRESS.encode(), PASSWORD.encode()))])
        answered(sock, model, [(b"s", b"SELECT INBOX"), (b"u", b"UID FETCH 1:* (UID)")])
        assert len(model.uids) == 30 and None not in model.uids
        sock.sendall(
            model.pipeline(
                [
                    (b"b1", b"FETCH 1:* (UID FLAGS)"),  # more than a burst: several turns
                    (b"b2", b"FETCH 2 (UID FLAGS)"),
                    (b"b3", b"STORE 1 +FLAGS (\\Deleted)"),
                    (b"b4", b"SEARCH DELETED"),
                    (b"b5", b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE),
                    (b"b6", b"EXPUNGE"),
                ]
            )
        )
        other.store("5", "+FLAGS.SILENT", "(\\Deleted)")
        other.expunge()
        answered(sock, model, [(b"b7", b"UID FETCH 1:* (FLAGS)"), (b"b8", b"NOOP")])
        assert model.errors == []
        assert model.answered[3:] == [b"b%d" % n for n in range(1, 9)]
        assert set(model.statuses.values()) == {b"OK"}
        answered(sock, model, [(b"z", b"FETCH 1:* (UID FLAGS)")])
        assert model.errors == []
        assert len(model.uids) == 29 and None not in model.uids  # 30 - 2 expunged + 1
    other.logout()
