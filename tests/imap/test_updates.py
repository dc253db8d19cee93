"""Several sessions on one mailbox: each is told of the others' changes, in RFC 3501 order."""

from __future__ import annotations

from pathlib import Path

from tests.imap.client_model import ClientModel
from tests.imap.harness import Session, make_session, second_session

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


def two_selected(tmp_path: Path, count: int = 3) -> tuple[Session, Session]:
    a = make_session(tmp_path)
    for _ in range(count):
        a.deliver(MESSAGE)
    a.command(b"SELECT INBOX")
    b = second_session(a)
    b.command(b"SELECT INBOX")
    return a, b


def test_expunge_reaches_other_session_at_noop(tmp_path: Path) -> None:
    """An EXPUNGE in A is reported to B as untagged EXPUNGE at B's next NOOP."""
    a, b = two_selected(tmp_path)
    a.command(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines, done = a.command(b"EXPUNGE")
    assert b"* 2 EXPUNGE" in lines and b"OK" in done
    lines, _ = b.command(b"NOOP")
    assert b"* 2 EXPUNGE" in lines


def test_expunge_held_back_during_fetch(tmp_path: Path) -> None:
    """B's FETCH does not carry the EXPUNGE (RFC 3501 7.4.1); its following NOOP does."""
    a, b = two_selected(tmp_path)
    a.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.command(b"EXPUNGE")
    lines, _ = b.command(b"FETCH 3 (FLAGS)")
    assert not any(b"EXPUNGE" in ln for ln in lines), lines
    assert any(ln.startswith(b"* 3 FETCH") for ln in lines)
    lines, _ = b.command(b"NOOP")
    assert b"* 1 EXPUNGE" in lines


def test_uid_fetch_may_carry_expunge(tmp_path: Path) -> None:
    """UID FETCH is allowed to report EXPUNGE (RFC 3501 7.4.1 note)."""
    a, b = two_selected(tmp_path)
    a.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.command(b"EXPUNGE")
    lines, _ = b.command(b"UID FETCH 1:* (FLAGS)")
    assert b"* 1 EXPUNGE" in lines


def test_append_and_flags_reach_other_session(tmp_path: Path) -> None:
    """New mail and another session's flag change are reported as EXISTS and FETCH FLAGS."""
    a, b = two_selected(tmp_path)
    a.deliver(MESSAGE)
    a.command(b"NOOP")
    a.command(b"STORE 1 +FLAGS.SILENT (\\Flagged)")
    lines, _ = b.command(b"NOOP")
    assert b"* 4 EXISTS" in lines
    assert any(ln.startswith(b"* 1 FETCH") and b"\\Flagged" in ln for ln in lines), lines


def test_idle_reports_changes_and_ends_with_done(tmp_path: Path) -> None:
    """During IDLE, changes are pushed when the poll timer fires; DONE ends it with OK."""
    a, b = two_selected(tmp_path)
    b.send(b"i1 IDLE\r\n")
    assert b.output().startswith(b"+ ")
    a.deliver(MESSAGE)
    b.clock.advance(b.server.settings.idle_poll_interval)
    assert b"* 4 EXISTS" in b.output()
    b.send(b"DONE\r\n")
    assert b"i1 OK" in b.output()


def test_close_expunges_silently(tmp_path: Path) -> None:
    """CLOSE removes \\Deleted messages without untagged EXPUNGE and deselects."""
    a, _ = two_selected(tmp_path)
    a.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    lines, done = a.command(b"CLOSE")
    assert b"OK" in done and not any(b"EXPUNGE" in ln for ln in lines)
    lines, _ = a.command(b"SELECT INBOX")
    assert b"* 2 EXISTS" in lines


def test_store_on_examined_mailbox_is_no(tmp_path: Path) -> None:
    """STORE on an EXAMINEd mailbox answers NO [READ-ONLY] (Twisted answers BAD)."""
    a = make_session(tmp_path)
    a.deliver(MESSAGE)
    a.command(b"EXAMINE INBOX")
    _, done = a.command(b"STORE 1 +FLAGS (\\Seen)")
    assert b"NO [READ-ONLY]" in done


# -- new keywords are announced before they are used (RFC 3501 7.2.6, 7.1) -----------


def append_literal(session: Session, head: bytes, body: bytes = MESSAGE) -> list[bytes]:
    """``APPEND <head> {n}`` with a synchronizing literal; every line up to the tagged OK."""
    session.send(b"ap APPEND " + head + b" {%d}\r\n" % len(body))
    assert session.output().startswith(b"+ ")
    session.send(body + b"\r\n")
    lines, done = Session.split(session.output(), b"ap")
    assert b"ap OK" in done, (lines, done)
    return lines


def first_index(lines: list[bytes], *needles: bytes) -> int:
    """Index of the first line holding every one of ``needles``."""
    return next(i for i, ln in enumerate(lines) if all(n in ln for n in needles))


def announces(lines: list[bytes], keyword: bytes, before: bytes) -> bool:
    """``* FLAGS`` and ``* OK [PERMANENTFLAGS`` name ``keyword`` before the ``before`` line."""
    flags = first_index(lines, b"* FLAGS (", keyword)
    permanent = first_index(lines, b"* OK [PERMANENTFLAGS (", keyword)
    return max(flags, permanent) < first_index(lines, before)


def test_store_announces_new_keyword_before_its_fetch(tmp_path: Path) -> None:
    """STORE +FLAGS (NewKeyword): FLAGS and PERMANENTFLAGS with it precede STORE's FETCH."""
    a, _ = two_selected(tmp_path)
    lines, done = a.command(b"STORE 2 +FLAGS (NewKeyword)")
    assert b"OK" in done
    assert announces(lines, b"NewKeyword", b"* 2 FETCH")
    assert b"\\*" in lines[first_index(lines, b"PERMANENTFLAGS")]  # still room for more
    lines, _ = a.command(b"STORE 3 +FLAGS (NewKeyword)")
    assert not any(ln.startswith(b"* FLAGS") for ln in lines), lines  # told once


def test_other_session_hears_of_new_keyword_at_noop(tmp_path: Path) -> None:
    """B's NOOP after A's STORE of a new keyword: FLAGS with it, then the FETCH naming it."""
    a, b = two_selected(tmp_path)
    a.command(b"STORE 1 +FLAGS.SILENT (Project)")
    lines, _ = b.command(b"NOOP")
    assert announces(lines, b"Project", b"* 1 FETCH")


def test_other_session_hears_of_new_keyword_before_its_own_fetch(tmp_path: Path) -> None:
    """B FETCHes before any NOOP: FLAGS with the new keyword still precede B's FETCH response."""
    a, b = two_selected(tmp_path)
    a.command(b"STORE 1 +FLAGS.SILENT (Project)")
    lines, done = b.command(b"FETCH 1 (FLAGS)")
    assert b"OK" in done
    assert announces(lines, b"Project", b"* 1 FETCH")


def test_idle_session_hears_of_new_keyword(tmp_path: Path) -> None:
    """During IDLE the poll announces another session's new keyword before the FETCH naming it."""
    a, b = two_selected(tmp_path)
    b.send(b"i1 IDLE\r\n")
    assert b.output().startswith(b"+ ")
    a.command(b"STORE 1 +FLAGS.SILENT (Project)")
    b.clock.advance(b.server.settings.idle_poll_interval)
    assert announces(b.output().split(b"\r\n"), b"Project", b"* 1 FETCH")
    b.send(b"DONE\r\n")
    assert b"i1 OK" in b.output()


def test_examine_session_hears_new_keyword_with_empty_permanentflags(tmp_path: Path) -> None:
    """A read-only (EXAMINE) session is told FLAGS with the keyword and PERMANENTFLAGS ()."""
    a = make_session(tmp_path)
    a.deliver(MESSAGE)
    a.command(b"SELECT INBOX")
    b = second_session(a)
    b.command(b"EXAMINE INBOX")
    a.command(b"STORE 1 +FLAGS.SILENT (Project)")
    lines, _ = b.command(b"NOOP")
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox" in lines
    assert first_index(lines, b"* FLAGS (", b"Project") < first_index(lines, b"* 1 FETCH")


def test_append_with_new_keyword_is_announced(tmp_path: Path) -> None:
    """APPEND (Urgent): the appender and another session get FLAGS with it before its FETCH."""
    a, b = two_selected(tmp_path)
    lines = append_literal(a, b"INBOX (\\Seen Urgent)")
    assert announces(lines, b"Urgent", b"* 4 EXISTS")
    lines, _ = b.command(b"NOOP")
    assert announces(lines, b"Urgent", b"* 4 EXISTS")
    for session in (a, b):
        lines, _ = session.command(b"FETCH 4 (FLAGS)")
        assert any(ln.startswith(b"* 4 FETCH") and b"Urgent" in ln for ln in lines)
        assert not any(ln.startswith(b"* FLAGS") for ln in lines)  # told once


def test_copy_announces_keyword_to_the_target_mailbox_sessions(tmp_path: Path) -> None:
    """COPY of a message with a keyword to a mailbox without it: the target's sessions are told."""
    a = make_session(tmp_path)
    a.deliver(MESSAGE)
    a.command(b"CREATE Archive")
    a.command(b"SELECT INBOX")
    a.command(b"STORE 1 +FLAGS.SILENT (Project)")
    b = second_session(a)
    lines, _ = b.command(b"SELECT Archive")
    assert not any(b"Project" in ln for ln in lines)
    _, done = a.command(b"COPY 1 Archive")
    assert b"OK" in done
    lines, _ = b.command(b"NOOP")
    assert first_index(lines, b"* FLAGS (", b"Project") < lines.index(b"* 1 EXISTS")
    assert any(b"PERMANENTFLAGS" in ln and b"Project" in ln for ln in lines)
    lines, _ = b.command(b"FETCH 1 (FLAGS)")
    assert any(ln.startswith(b"* 1 FETCH") and b"Project" in ln for ln in lines)


# -- pipelined commands run one at a time, in order (RFC 3501 5.5, 7.4.1) -------------

PIPELINED = b"Subject: pipelined\r\n\r\nappended while others wait\r\n"


def answer_all(session: Session, model: ClientModel) -> None:
    """Let the reactor run (the shared clock) until every command in progress is answered."""
    model.read(session.output())
    for _ in range(200):
        if not model.in_progress:
            return
        session.clock.advance(0)
        model.read(session.output())
    raise AssertionError(f"unanswered: {model.in_progress}")


def assert_in_step(session: Session, model: ClientModel) -> None:
    """A FETCH of every message, sent alone, agrees with the model and the server's snapshot."""
    session.send(model.pipeline([(b"z", b"FETCH 1:* (UID FLAGS)")]))
    answer_all(session, model)
    assert model.errors == []
    assert None not in model.uids
    assert model.uids == list(session.server.mbox.uids)


def test_pipelined_commands_answered_in_order_while_another_session_expunges(
    tmp_path: Path,
) -> None:
    """Pipelined FETCH/STORE/SEARCH/APPEND/EXPUNGE: answered in order, EXPUNGE where allowed."""
    a, b = two_selected(tmp_path, count=20)
    model = ClientModel(b.server.mbox.uids)
    # RFC 3501 5.5: commands naming sequence numbers first, the others after them.
    b.send(
        model.pipeline(
            [
                (b"b1", b"FETCH 1:* (UID FLAGS)"),  # over a burst: answered on later turns
                (b"b2", b"FETCH 2 (UID FLAGS)"),
                (b"b3", b"STORE 1 +FLAGS (\\Deleted)"),
                (b"b4", b"SEARCH DELETED"),
                (b"b5", b"APPEND INBOX {%d+}\r\n" % len(PIPELINED) + PIPELINED),
                (b"b6", b"EXPUNGE"),
                (b"b7", b"UID FETCH 1:* (FLAGS)"),
                (b"b8", b"NOOP"),
            ]
        )
    )
    a.command(b"STORE 5 +FLAGS.SILENT (\\Deleted)")
    a.command(b"EXPUNGE")
    answer_all(b, model)
    assert model.errors == []
    assert model.answered == [b"b%d" % n for n in range(1, 9)]
    assert set(model.statuses.values()) == {b"OK"}
    assert_in_step(b, model)


def test_slow_append_literal_keeps_pipelined_order(tmp_path: Path) -> None:
    """An APPEND whose literal arrives in pieces behind a running FETCH: the rest wait for it."""
    a, b = two_selected(tmp_path, count=20)
    model = ClientModel(b.server.mbox.uids)
    half = len(PIPELINED) // 2
    first = [
        (b"s1", b"FETCH 1:* (UID FLAGS)"),
        (b"s2", b"FETCH 3 (UID FLAGS)"),
        (b"s3", b"STORE 1 +FLAGS (\\Deleted)"),
        (b"s4", b"APPEND INBOX {%d+}" % len(PIPELINED)),
    ]
    b.send(model.pipeline(first) + PIPELINED[:half])
    b.clock.advance(0)
    a.command(b"STORE 7 +FLAGS.SILENT (\\Deleted)")
    a.command(b"EXPUNGE")
    b.clock.advance(0)
    rest = [(b"s5", b"EXPUNGE"), (b"s6", b"UID FETCH 1:* (FLAGS)"), (b"s7", b"NOOP")]
    b.send(PIPELINED[half:] + b"\r\n" + model.pipeline(rest))
    answer_all(b, model)
    assert model.errors == []
    assert model.answered == [b"s%d" % n for n in range(1, 8)]
    assert set(model.statuses.values()) == {b"OK"}
    assert_in_step(b, model)
