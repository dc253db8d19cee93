"""STORE is answered OK only once its renames are durable (issue 10).

The Maildir store fsyncs ``cur/`` in a worker thread, one fsync shared by
every STORE meanwhile (``transcoder/store/group_sync.py``); the server must
hold the FETCH responses and the tagged OK until that fsync has completed.
"""

from __future__ import annotations

from pathlib import Path

from tests.imap.harness import selected_session
from tests.store.helpers import Worker, message


def test_store_ok_waits_for_the_fsync_of_its_renames(tmp_path: Path) -> None:
    """Nothing is answered while the fsync runs; then FETCH FLAGS and OK, in that order."""
    session = selected_session(tmp_path, message("one"), message("two"))
    worker = Worker()
    session.store.run_blocking = worker
    session.send(b"s1 STORE 1:2 +FLAGS (\\Seen)\r\n")
    assert session.output() == b""
    session.send(b"s2 NOOP\r\n")  # pipelined: waits its turn (RFC 3501 5.5)
    assert session.output() == b""
    (call,) = worker.calls
    assert call[1] == (session.server.account.root / "cur",)
    worker.run_next()
    lines = session.output().split(b"\r\n")
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Seen \\Recent))"
    assert lines[1] == b"* 2 FETCH (FLAGS (\\Seen \\Recent))"
    assert lines[2].startswith(b"s1 OK")
    session.clock.advance(0)  # the pipelined command is read on
    assert b"s2 OK" in b"\r\n".join(lines[3:]) + session.output()


def test_store_whose_fsync_fails_is_not_answered_ok(tmp_path: Path) -> None:
    """The fsync fails (cur/ gone for the moment): the STORE gets NO, never OK."""
    session = selected_session(tmp_path, message("one"))
    worker = Worker()
    session.store.run_blocking = worker
    session.send(b"s1 STORE 1 +FLAGS (\\Seen)\r\n")
    cur = session.server.account.root / "cur"
    cur.rename(cur.with_name("cur.away"))
    try:
        worker.run_next()
    finally:
        cur.with_name("cur.away").rename(cur)
    _, done = session.split(session.output(), b"s1")
    assert done.startswith(b"s1 NO")


def test_expunge_ok_waits_for_the_fsync_of_its_unlinks(tmp_path: Path) -> None:
    """EXPUNGE: the EXPUNGE responses and OK come once cur/ is fsync'ed."""
    session = selected_session(tmp_path, message("one"), message("two"))
    session.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    worker = Worker()
    session.store.run_blocking = worker
    session.send(b"e1 EXPUNGE\r\n")
    assert session.output() == b""
    (call,) = worker.calls
    assert call[1] == (session.server.account.root / "cur",)
    worker.run_next()
    untagged, done = session.split(session.output(), b"e1")
    assert untagged == [b"* 1 EXPUNGE"] and done.startswith(b"e1 OK")
