"""STORE is answered OK only once its renames are durable (issue 10).

The Maildir store fsyncs ``cur/`` in a worker thread, one fsync shared by
every STORE meanwhile (``transcoder/store/group_sync.py``); the server must
hold the FETCH responses and the tagged OK until that fsync has completed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imap.harness import selected_session
from tests.store.helpers import Worker, message
from transcoder import files
from transcoder.store import mailbox as mailbox_module


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories the store fsyncs (the real fsync runs)."""
    seen: list[Path] = []

    def watched(path: Path) -> None:
        seen.append(path)
        files.fsync_dir(path)

    monkeypatch.setattr(mailbox_module, "fsync_dir", watched)
    return seen


def test_store_ok_waits_for_the_fsync_of_its_renames(tmp_path: Path, synced: list[Path]) -> None:
    """Nothing is answered while the fsync runs; then FETCH FLAGS and OK, in that order."""
    session = selected_session(tmp_path, message("one"), message("two"))
    synced.clear()
    worker = Worker()
    session.store.run_blocking = worker
    session.send(b"s1 STORE 1:2 +FLAGS (\\Seen)\r\n")
    assert session.output() == b""
    session.send(b"s2 NOOP\r\n")  # pipelined: waits its turn (RFC 3501 5.5)
    assert session.output() == b""
    assert len(worker.calls) == 1 and synced == []
    worker.run_next()
    assert synced == [session.server.account.root / "cur"]
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


def test_expunge_ok_waits_for_the_fsync_of_its_unlinks(tmp_path: Path, synced: list[Path]) -> None:
    """EXPUNGE: the EXPUNGE responses and OK come once cur/ is fsync'ed."""
    session = selected_session(tmp_path, message("one"), message("two"))
    session.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    synced.clear()
    worker = Worker()
    session.store.run_blocking = worker
    session.send(b"e1 EXPUNGE\r\n")
    assert session.output() == b""
    assert len(worker.calls) == 1 and synced == []
    worker.run_next()
    assert synced == [session.server.account.root / "cur"]
    untagged, done = session.split(session.output(), b"e1")
    assert untagged == [b"* 1 EXPUNGE"] and done.startswith(b"e1 OK")
