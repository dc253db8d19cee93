"""Mailbox commands over the wire: SELECT/EXAMINE, LIST/LSUB, CREATE/DELETE/RENAME,
(UN)SUBSCRIBE, STATUS, APPEND, COPY, MOVE, NAMESPACE (RFC 3501, 4315, 6851, 2342)."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.mail.imap4 import MessageSet

from tests.imap.harness import Session, make_session
from transcoder.store import MaildirStore

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
UNTAGGED_OK_CODE = re.compile(rb"^\* OK \[[^\]]+\] \S")


def synchronously(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """The store's ``run_blocking`` for protocol tests: run the file work right away."""
    return defer.maybeDeferred(f, *args, **kwargs)


@pytest.fixture
def imap(tmp_path: Path) -> Session:
    """A logged-in session on an empty Maildir account whose file copies run inline."""
    session = make_session(tmp_path, state="unauth")
    store = MaildirStore(tmp_path / "mail", clock=session.clock, run_blocking=synchronously)
    session.server.account = store.account("alice@example.org")
    session.server.state = "auth"
    session.store = store
    return session


def ok(session: Session, line: bytes) -> list[bytes]:
    """Run a command that must succeed; its untagged lines."""
    lines, done = session.command(line)
    assert b" OK" in done, (line, lines, done)
    return lines


def append(session: Session, head: bytes, body: bytes = MESSAGE) -> tuple[list[bytes], bytes]:
    """APPEND with a synchronizing literal: ``<tag> APPEND <head> {n}``, then the message."""
    tag = b"a%d" % id(body)
    session.send(tag + b" APPEND " + head + b" {%d}\r\n" % len(body))
    first = session.output()
    if not first.startswith(b"+"):
        return Session.split(first, tag)
    session.send(body + b"\r\n")
    return Session.split(session.output(), tag)


def listed(lines: list[bytes], command: bytes = b"LIST") -> list[bytes]:
    """The untagged LIST/LSUB lines among ``lines``."""
    return [ln for ln in lines if ln.startswith(b"* " + command + b" ")]


def count(session: Session, mailbox: bytes, item: bytes = b"MESSAGES") -> int:
    """One STATUS counter of ``mailbox``."""
    lines = ok(session, b"STATUS " + mailbox + b" (" + item + b")")
    match = re.search(item + rb" (\d+)", lines[0])
    assert match, lines
    return int(match.group(1))


# -- SELECT / EXAMINE -------------------------------------------------------------


def deliver_seen(session: Session, seen: int, unseen: int) -> None:
    """Deliver ``seen`` messages marked \\Seen (through the store), then ``unseen`` more."""
    for _ in range(seen):
        session.deliver(MESSAGE)
    if seen:
        mailbox = session.server.account.select("INBOX")
        mailbox.store(MessageSet(1, seen), ["\\Seen"], 1, False)
        mailbox.close()
    for _ in range(unseen):
        session.deliver(MESSAGE)


def test_select_reports_every_rfc3501_item(imap: Session) -> None:
    """SELECT sends FLAGS EXISTS RECENT UNSEEN PERMANENTFLAGS UIDVALIDITY UIDNEXT (item 4)."""
    deliver_seen(imap, 1, 2)
    lines, done = imap.command(b"SELECT INBOX")
    assert lines[0].startswith(b"* FLAGS (") and b"\\Seen" in lines[0]
    assert b"* 3 EXISTS" in lines
    assert any(re.fullmatch(rb"\* \d+ RECENT", ln) for ln in lines)
    assert any(ln.startswith(b"* OK [UNSEEN 2] ") for ln in lines), lines
    assert any(ln.startswith(b"* OK [PERMANENTFLAGS (") and b"\\Deleted" in ln for ln in lines)
    assert any(re.match(rb"\* OK \[UIDVALIDITY \d+\] ", ln) for ln in lines)
    assert b"* OK [UIDNEXT 4] Predicted next UID" in lines
    assert done.startswith(b"t1 OK [READ-WRITE] ")
    assert imap.server.state == "select" and imap.server.mbox is not None


def test_select_untagged_ok_codes_carry_text(imap: Session) -> None:
    """Each untagged OK with a response code has text after the code (issue item 10)."""
    imap.deliver(MESSAGE)
    lines = ok(imap, b"SELECT INBOX")
    coded = [ln for ln in lines if ln.startswith(b"* OK [")]
    assert any(ln.startswith(b"* OK [UIDVALIDITY ") for ln in coded), coded
    assert all(UNTAGGED_OK_CODE.match(ln) for ln in coded), coded


def test_select_without_unseen_message_omits_unseen(imap: Session) -> None:
    """UNSEEN is only sent when some message is unseen (RFC 3501 6.3.1)."""
    deliver_seen(imap, 1, 0)
    lines = ok(imap, b"SELECT INBOX")
    assert not any(b"[UNSEEN" in ln for ln in lines)


def test_select_first_unseen_is_a_sequence_number(imap: Session) -> None:
    """[UNSEEN n] names the first unseen message's sequence number."""
    deliver_seen(imap, 2, 1)
    lines = ok(imap, b"SELECT INBOX")
    assert any(ln.startswith(b"* OK [UNSEEN 3] ") for ln in lines), lines


def test_examine_is_read_only_without_permanent_flags(imap: Session) -> None:
    """EXAMINE answers [READ-ONLY] and an empty PERMANENTFLAGS list."""
    imap.deliver(MESSAGE)
    lines, done = imap.command(b"EXAMINE INBOX")
    assert b"OK [READ-ONLY]" in done
    assert any(ln.startswith(b"* OK [PERMANENTFLAGS ()] ") for ln in lines), lines


def test_select_missing_mailbox_is_nonexistent_and_deselects(imap: Session) -> None:
    """A failed SELECT answers NO [NONEXISTENT] and leaves no mailbox selected."""
    ok(imap, b"SELECT INBOX")
    _, done = imap.command(b"SELECT nosuch")
    assert b"NO [NONEXISTENT]" in done
    assert imap.server.state == "auth" and imap.server.mbox is None
    _, done = imap.command(b"FETCH 1 FLAGS")
    assert b" BAD" in done


def test_select_invalid_modified_utf7_is_cannot(imap: Session) -> None:
    """A name that is not valid modified UTF-7 is refused with NO [CANNOT]."""
    _, done = imap.command(b"SELECT &Jjo")
    assert b"NO [CANNOT]" in done


def test_select_inbox_is_case_insensitive(imap: Session) -> None:
    """SELECT inbox opens INBOX (RFC 3501 5.1)."""
    _, done = imap.command(b"SELECT inbox")
    assert b"OK [READ-WRITE]" in done


# -- LIST / LSUB --------------------------------------------------------------------


def test_list_empty_pattern_gives_delimiter(imap: Session) -> None:
    """LIST "" "" answers the hierarchy delimiter with \\Noselect (issue item 11)."""
    lines = ok(imap, b'LIST "" ""')
    assert lines == [b'* LIST (\\Noselect) "/" ""']


def test_list_pattern_is_anchored_at_the_end(imap: Session) -> None:
    """LIST "" "a" matches a only, not ab or a/b (RFC 3501 6.3.8, issue item 11)."""
    for name in (b"a", b"ab", b"a/b"):
        ok(imap, b"CREATE " + name)
    lines = listed(ok(imap, b'LIST "" "a"'))
    assert len(lines) == 1 and lines[0].endswith(b' "/" "a"'), lines


def test_list_percent_stops_at_delimiter(imap: Session) -> None:
    """% matches within one hierarchy level, * across levels (issue item 11)."""
    for name in (b"a", b"a/b", b"a/b/c"):
        ok(imap, b"CREATE " + name)
    percent = listed(ok(imap, b'LIST "" "a/%"'))
    star = listed(ok(imap, b'LIST "" "a/*"'))
    assert [ln.rsplit(b" ", 1)[1] for ln in percent] == [b'"a/b"']
    assert sorted(ln.rsplit(b" ", 1)[1] for ln in star) == [b'"a/b"', b'"a/b/c"']


def test_list_reference_is_prefixed_to_pattern(imap: Session) -> None:
    """LIST "a/" "%" lists a's children (reference + pattern)."""
    ok(imap, b"CREATE a/b")
    ok(imap, b"CREATE c")
    lines = listed(ok(imap, b'LIST "a/" "%"'))
    assert [ln.rsplit(b" ", 1)[1] for ln in lines] == [b'"a/b"']


def test_list_sends_mailbox_attributes_not_message_flags(imap: Session) -> None:
    """LIST attributes are \\HasChildren/\\HasNoChildren, never message flags (issue item 11)."""
    ok(imap, b"CREATE a/b")
    lines = {ln.rsplit(b" ", 1)[1]: ln for ln in listed(ok(imap, b'LIST "" "*"'))}
    assert b"\\HasChildren" in lines[b'"a"']
    assert b"\\HasNoChildren" in lines[b'"a/b"']
    assert not any(b"\\Seen" in ln or b"\\Answered" in ln for ln in lines.values())
    assert b'"INBOX"' in lines


def test_atom_special_characters_in_names(imap: Session) -> None:
    """Names with !#$&'+,-. work in CREATE/SELECT/LIST/STATUS/RENAME/DELETE (issue item 11)."""
    name = b"x!#$&-'+,-.y"
    ok(imap, b"CREATE " + name)
    assert b'"' + name + b'"' in b"".join(listed(ok(imap, b'LIST "" "x*"')))
    ok(imap, b"SELECT " + name)
    ok(imap, b"STATUS " + name + b" (MESSAGES)")
    ok(imap, b"CLOSE")
    ok(imap, b"RENAME " + name + b" z!#$&-'+,-.")
    ok(imap, b"DELETE z!#$&-'+,-.")
    assert listed(ok(imap, b'LIST "" "*"')) == [b'* LIST (\\HasNoChildren) "/" "INBOX"']


def test_modified_utf7_names_round_trip(imap: Session) -> None:
    """A modified UTF-7 name is stored as Unicode and listed in modified UTF-7 (issue item 11)."""
    ok(imap, b"CREATE &AOk-t&AOk-")
    assert "été" in imap.server.account.mailbox_names()
    assert any(ln.endswith(b' "&AOk-t&AOk-"') for ln in listed(ok(imap, b'LIST "" "*"')))
    ok(imap, b'STATUS "&AOk-t&AOk-" (UIDNEXT)')
    ok(imap, b"SELECT &AOk-t&AOk-")


def test_non_canonical_modified_utf7_is_refused(imap: Session) -> None:
    """CREATE with malformed modified UTF-7 (e.g. raw 8-bit) answers NO [CANNOT] (item 11)."""
    for raw in (b"&AOk", b'"caf\xc3\xa9"', b"&AGE-"):
        _, done = imap.command(b"CREATE " + raw)
        assert b"NO [CANNOT]" in done, (raw, done)


def test_quoted_name_with_escapes(imap: Session) -> None:
    """Quoted names may escape " and \\; LIST quotes them back (item 11, RFC 3501 quoted)."""
    ok(imap, b'CREATE "say \\"hi\\" \\\\o/"')
    assert 'say "hi" \\o' in imap.server.account.mailbox_names()
    lines = listed(ok(imap, b'LIST "" "say*"'))
    assert lines and lines[0].endswith(b' "say \\"hi\\" \\\\o"'), lines


def test_literal_mailbox_name(imap: Session) -> None:
    """A mailbox name may be sent as a literal."""
    imap.send(b"c1 CREATE {7}\r\n")
    assert imap.output().startswith(b"+")
    imap.send(b"litname\r\n")
    assert b"c1 OK" in imap.output()
    assert "litname" in imap.server.account.mailbox_names()


def test_lsub_lists_only_subscribed(imap: Session) -> None:
    """LSUB shows subscribed names only; UNSUBSCRIBE removes them."""
    ok(imap, b"CREATE a")
    ok(imap, b"CREATE b")
    ok(imap, b"SUBSCRIBE b")
    assert [ln.rsplit(b" ", 1)[1] for ln in listed(ok(imap, b'LSUB "" "*"'), b"LSUB")] == [b'"b"']
    ok(imap, b"UNSUBSCRIBE b")
    assert listed(ok(imap, b'LSUB "" "*"'), b"LSUB") == []


def test_lsub_percent_shows_unsubscribed_parent_as_noselect(imap: Session) -> None:
    """LSUB % lists an unsubscribed parent of a subscribed child as \\Noselect (item 11)."""
    ok(imap, b"CREATE news/comp")
    ok(imap, b"SUBSCRIBE news/comp")
    percent = listed(ok(imap, b'LSUB "" "%"'), b"LSUB")
    assert percent == [b'* LSUB (\\Noselect) "/" "news"'], percent
    star = listed(ok(imap, b'LSUB "" "*"'), b"LSUB")
    assert [ln.rsplit(b" ", 1)[1] for ln in star] == [b'"news/comp"']


# -- CREATE / DELETE / RENAME ---------------------------------------------------------


def test_create_existing_is_alreadyexists(imap: Session) -> None:
    """CREATE of an existing mailbox (or INBOX) answers NO [ALREADYEXISTS]."""
    ok(imap, b"CREATE a")
    for name in (b"a", b"INBOX", b"inbox"):
        _, done = imap.command(b"CREATE " + name)
        assert b"NO [ALREADYEXISTS]" in done, (name, done)


def test_create_with_trailing_delimiter(imap: Session) -> None:
    """CREATE a/ creates a (RFC 3501 6.3.3)."""
    ok(imap, b"CREATE a/")
    assert "a" in imap.server.account.mailbox_names()


def test_delete_inbox_is_cannot(imap: Session) -> None:
    """DELETE INBOX answers NO [CANNOT]."""
    _, done = imap.command(b"DELETE INBOX")
    assert b"NO [CANNOT]" in done


def test_delete_missing_is_nonexistent(imap: Session) -> None:
    """DELETE of a missing mailbox answers NO [NONEXISTENT]."""
    _, done = imap.command(b"DELETE nosuch")
    assert b"NO [NONEXISTENT]" in done


def test_delete_selected_mailbox_is_inuse(imap: Session) -> None:
    """Deleting the mailbox this session has selected answers NO [INUSE]; it survives."""
    ok(imap, b"CREATE a")
    ok(imap, b"SELECT a")
    _, done = imap.command(b"DELETE a")
    assert b"NO [INUSE]" in done
    assert "a" in imap.server.account.mailbox_names()


def test_delete_removes_mailbox(imap: Session) -> None:
    """DELETE removes a mailbox from LIST."""
    ok(imap, b"CREATE a")
    ok(imap, b"DELETE a")
    assert "a" not in imap.server.account.mailbox_names()


def test_rename_selected_mailbox_is_inuse(imap: Session) -> None:
    """Renaming the selected mailbox (or a superior of it) answers NO [INUSE]."""
    ok(imap, b"CREATE a/b")
    ok(imap, b"SELECT a/b")
    for old in (b"a/b", b"a"):
        _, done = imap.command(b"RENAME " + old + b" c")
        assert b"NO [INUSE]" in done, (old, done)
    assert "a/b" in imap.server.account.mailbox_names()


def test_rename_to_existing_is_alreadyexists(imap: Session) -> None:
    """RENAME onto an existing name answers NO [ALREADYEXISTS]."""
    ok(imap, b"CREATE a")
    ok(imap, b"CREATE b")
    _, done = imap.command(b"RENAME a b")
    assert b"NO [ALREADYEXISTS]" in done


def test_rename_missing_is_nonexistent(imap: Session) -> None:
    """RENAME of a missing mailbox answers NO [NONEXISTENT]."""
    _, done = imap.command(b"RENAME nosuch other")
    assert b"NO [NONEXISTENT]" in done


def test_rename_moves_inferiors(imap: Session) -> None:
    """RENAME a c also renames a/b to c/b (RFC 3501 6.3.5)."""
    ok(imap, b"CREATE a/b")
    ok(imap, b"RENAME a c")
    names = imap.server.account.mailbox_names()
    assert "c/b" in names and "a/b" not in names


def test_rename_keeps_messages(imap: Session) -> None:
    """A renamed mailbox keeps its messages."""
    ok(imap, b"CREATE a")
    append(imap, b"a")
    ok(imap, b"RENAME a b")
    assert count(imap, b"b") == 1


# -- STATUS ------------------------------------------------------------------------------


def test_status_reports_requested_items_in_order(imap: Session) -> None:
    """STATUS answers the requested counters, in the order asked (RFC 3501 6.3.10)."""
    append(imap, b"INBOX (\\Seen)")
    append(imap, b"INBOX")
    lines = ok(imap, b"STATUS INBOX (UNSEEN MESSAGES UIDNEXT)")
    assert lines == [b'* STATUS "INBOX" (UNSEEN 1 MESSAGES 2 UIDNEXT 3)']


def test_status_all_items(imap: Session) -> None:
    """STATUS knows MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN."""
    lines = ok(imap, b"STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert re.fullmatch(
        rb'\* STATUS "INBOX" \(MESSAGES 0 RECENT 0 UIDNEXT 1 UIDVALIDITY \d+ UNSEEN 0\)', lines[0]
    ), lines


def test_status_unknown_item_is_bad(imap: Session) -> None:
    """An unknown STATUS item is a syntax error (BAD)."""
    _, done = imap.command(b"STATUS INBOX (MESSAGES SIZE)")
    assert b" BAD" in done


def test_status_missing_mailbox_is_nonexistent(imap: Session) -> None:
    """STATUS of a missing mailbox answers NO [NONEXISTENT]."""
    _, done = imap.command(b"STATUS nosuch (MESSAGES)")
    assert b"NO [NONEXISTENT]" in done


def test_status_on_selected_mailbox(imap: Session) -> None:
    """STATUS is allowed on the selected mailbox and leaves it selected."""
    append(imap, b"INBOX")
    ok(imap, b"SELECT INBOX")
    assert count(imap, b"INBOX") == 1
    assert imap.server.state == "select"


# -- APPEND -------------------------------------------------------------------------------


def test_append_with_flags_and_date_answers_appenduid(imap: Session) -> None:
    """APPEND box (flags) "date" {n} keeps flags and date; answers OK [APPENDUID v uid]."""
    _, done = append(imap, b'INBOX (\\Seen $Label) "22-Feb-2008 17:06:23 +0100"')
    assert re.search(rb"OK \[APPENDUID \d+ 1\] ", done), done
    session = imap.server.account.select("INBOX", False)
    [(_, message)] = list(session.fetch(MessageSet(1, None), True))
    assert set(message.getFlags()) >= {"\\Seen", "$Label"}
    stored = email.utils.parsedate_to_datetime(message.getInternalDate())
    assert stored == datetime(2008, 2, 22, 16, 6, 23, tzinfo=UTC)
    session.close()


def test_append_date_without_flag_list(imap: Session) -> None:
    """APPEND box "22-Feb-2008 17:06:23 +0000" {n} is accepted (issue item 9)."""
    _, done = append(imap, b'INBOX "22-Feb-2008 17:06:23 +0000"')
    assert b" OK" in done, done
    assert count(imap, b"INBOX") == 1


def test_append_single_digit_day(imap: Session) -> None:
    """date-day-fixed may be a space and one digit (RFC 3501 date-time)."""
    _, done = append(imap, b'INBOX " 2-Feb-2008 17:06:23 -0800"')
    assert b" OK" in done, done


def test_append_plain(imap: Session) -> None:
    """APPEND box {n} without flags or date stores the message."""
    _, done = append(imap, b"INBOX")
    assert b" OK" in done
    assert count(imap, b"INBOX") == 1


def test_append_missing_mailbox_is_trycreate_before_continuation(imap: Session) -> None:
    """APPEND to a missing mailbox: NO [TRYCREATE] before asking for the literal (item 6)."""
    imap.send(b"a1 APPEND nosuch (\\Seen) {5}\r\n")
    out = imap.output()
    assert not out.startswith(b"+"), out
    assert out.startswith(b"a1 NO [TRYCREATE]"), out
    ok(imap, b"NOOP")


def test_append_to_inbox_child_in_any_case(imap: Session) -> None:
    """APPEND names INBOX's children case-insensitively on the INBOX level, as SELECT does."""
    ok(imap, b'CREATE "INBOX/Sub"')
    imap.send(b'a1 APPEND "inbox/Sub" {%d+}\r\n' % len(MESSAGE) + MESSAGE + b"\r\n")
    out = imap.output()
    assert b"a1 OK [APPENDUID" in out, out
    assert count(imap, b"INBOX/Sub") == 1


def test_append_non_synchronizing_literal(imap: Session) -> None:
    """APPEND with a LITERAL+ literal stores the message without a continuation request."""
    imap.send(b"a1 APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    out = imap.output()
    assert not out.startswith(b"+") and b"a1 OK [APPENDUID" in out, out
    assert count(imap, b"INBOX") == 1


def test_append_missing_mailbox_non_synchronizing_literal_is_skipped(imap: Session) -> None:
    """A refused APPEND's LITERAL+ octets are skipped, never run as commands."""
    evil = b"x1 CREATE injected\r\n"
    imap.send(b"a1 APPEND nosuch {%d+}\r\n" % len(evil) + evil + b"\r\n")
    assert imap.output().startswith(b"a1 NO [TRYCREATE]")
    ok(imap, b"NOOP")
    assert "injected" not in imap.server.account.mailbox_names()


def test_append_invalid_date_is_bad(imap: Session) -> None:
    """An invalid date-time is a syntax error (BAD), before the literal."""
    for date in (b'"31-Feb-2008 17:06:23 +0000"', b'"22-Foo-2008 17:06:23 +0000"', b'"yesterday"'):
        _, done = append(imap, b"INBOX " + date)
        assert b" BAD" in done, (date, done)
    assert count(imap, b"INBOX") == 0


def test_append_recent_flag_is_bad(imap: Session) -> None:
    """\\Recent cannot be set by APPEND (RFC 3501 2.3.2): BAD."""
    _, done = append(imap, b"INBOX (\\Recent)")
    assert b" BAD" in done
    assert count(imap, b"INBOX") == 0


def test_append_empty_message_is_refused(imap: Session) -> None:
    """APPEND with {0} is refused with NO before any continuation."""
    imap.send(b"a1 APPEND INBOX {0}\r\n")
    out = imap.output()
    assert out.startswith(b"a1 NO"), out
    assert count(imap, b"INBOX") == 0


def test_append_mailbox_name_as_literal(imap: Session) -> None:
    """The APPEND mailbox may itself be a literal."""
    imap.send(b"a1 APPEND {5}\r\n")
    assert imap.output().startswith(b"+")
    imap.send(b"INBOX (\\Flagged) {%d}\r\n" % len(MESSAGE))
    assert imap.output().startswith(b"+")
    imap.send(MESSAGE + b"\r\n")
    assert b"a1 OK [APPENDUID" in imap.output()


def test_append_to_selected_mailbox_reports_exists_once(imap: Session) -> None:
    """APPEND to the selected mailbox is reported by exactly one EXISTS."""
    ok(imap, b"SELECT INBOX")
    lines, done = append(imap, b"INBOX")
    assert b" OK" in done
    assert lines.count(b"* 1 EXISTS") <= 1
    later = ok(imap, b"NOOP")
    assert (lines + later).count(b"* 1 EXISTS") == 1


# -- COPY / MOVE --------------------------------------------------------------------------


def _selected_with(imap: Session, flags: list[bytes]) -> None:
    for f in flags:
        append(imap, b"INBOX (" + f + b")")
    ok(imap, b"SELECT INBOX")


def test_copy_missing_mailbox_is_trycreate(imap: Session) -> None:
    """COPY to a missing mailbox answers NO [TRYCREATE] (issue item 6)."""
    _selected_with(imap, [b""])
    _, done = imap.command(b"COPY 1 nosuch")
    assert b"NO [TRYCREATE]" in done


def test_copy_answers_copyuid_and_keeps_flags(imap: Session) -> None:
    """COPY answers OK [COPYUID v src dst] and the copies keep their flags (RFC 4315)."""
    ok(imap, b"CREATE dst")
    append(imap, b"dst")
    _selected_with(imap, [b"\\Flagged", b"\\Seen", b""])
    _, done = imap.command(b"COPY 1:3 dst")
    match = re.search(rb"OK \[COPYUID (\d+) 1:3 2:4\] ", done)
    assert match, done
    lines = ok(imap, b"STATUS dst (UIDVALIDITY MESSAGES UNSEEN)")
    assert b"UIDVALIDITY " + match.group(1) in lines[0]
    assert b"MESSAGES 4" in lines[0] and b"UNSEEN 3" in lines[0]


def test_uid_copy(imap: Session) -> None:
    """UID COPY copies by UID and reports both UID sets."""
    ok(imap, b"CREATE dst")
    _selected_with(imap, [b"", b"", b""])
    _, done = imap.command(b"UID COPY 2,3 dst")
    assert re.search(rb"OK \[COPYUID \d+ 2:3 1:2\] ", done), done


def test_copy_from_examined_mailbox(imap: Session) -> None:
    """COPY works from a read-only (EXAMINEd) mailbox."""
    ok(imap, b"CREATE dst")
    append(imap, b"INBOX")
    ok(imap, b"EXAMINE INBOX")
    ok(imap, b"COPY 1 dst")
    assert count(imap, b"dst") == 1


def test_copy_bad_mailbox_name_is_cannot(imap: Session) -> None:
    """COPY to an invalid modified UTF-7 name answers NO [CANNOT]."""
    _selected_with(imap, [b""])
    _, done = imap.command(b"COPY 1 &AOk")
    assert b"NO [CANNOT]" in done


def test_move_sends_copyuid_then_expunges(imap: Session) -> None:
    """MOVE: untagged OK [COPYUID], untagged EXPUNGEs, tagged OK; messages moved (RFC 6851)."""
    ok(imap, b"CREATE dst")
    _selected_with(imap, [b"", b"\\Seen", b""])
    lines, done = imap.command(b"MOVE 1:2 dst")
    assert b" OK" in done, done
    assert re.match(rb"\* OK \[COPYUID \d+ 1:2 1:2\] \S", lines[0]), lines
    assert lines[1:] == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert count(imap, b"dst") == 2
    assert count(imap, b"INBOX") == 1


def test_uid_move(imap: Session) -> None:
    """UID MOVE moves by UID and expunges the right sequence numbers."""
    ok(imap, b"CREATE dst")
    _selected_with(imap, [b"", b"", b""])
    lines, done = imap.command(b"UID MOVE 3 dst")
    assert b" OK" in done, done
    assert re.match(rb"\* OK \[COPYUID \d+ 3 1\] ", lines[0]), lines
    assert b"* 3 EXPUNGE" in lines
    assert count(imap, b"INBOX") == 2


def test_move_to_missing_mailbox_moves_nothing(imap: Session) -> None:
    """MOVE to a missing mailbox answers NO [TRYCREATE] and leaves the source intact."""
    _selected_with(imap, [b""])
    lines, done = imap.command(b"MOVE 1 nosuch")
    assert b"NO [TRYCREATE]" in done
    assert not any(b"EXPUNGE" in ln for ln in lines)
    assert count(imap, b"INBOX") == 1


def test_move_from_examined_mailbox_is_refused(imap: Session) -> None:
    """MOVE from a read-only mailbox is refused with NO and copies nothing."""
    ok(imap, b"CREATE dst")
    append(imap, b"INBOX")
    ok(imap, b"EXAMINE INBOX")
    _, done = imap.command(b"MOVE 1 dst")
    assert b" NO" in done
    assert count(imap, b"dst") == 0


# -- NAMESPACE, CAPABILITY -----------------------------------------------------------------


def test_namespace(imap: Session) -> None:
    """NAMESPACE answers one personal namespace with "/" (RFC 2342)."""
    assert ok(imap, b"NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL']


def test_capabilities_advertise_move_and_uidplus(imap: Session) -> None:
    """CAPABILITY lists MOVE and UIDPLUS."""
    [line] = ok(imap, b"CAPABILITY")
    words = line.split()
    assert b"MOVE" in words and b"UIDPLUS" in words and b"NAMESPACE" in words


def test_copy_failure_part_way_leaves_no_copies(imap: Session) -> None:
    """A COPY failing on its second message removes the first copy and answers NO [LIMIT]."""
    keywords = [b"k%02d" % i for i in range(26)]
    ok(imap, b"CREATE dst")
    append(imap, b"dst (" + b" ".join(b"x%02d" % i for i in range(13)) + b")")
    append(imap, b"INBOX (" + b" ".join(keywords[:13]) + b")")
    append(imap, b"INBOX (" + b" ".join(keywords[13:]) + b")")
    ok(imap, b"SELECT INBOX")
    _, done = imap.command(b"COPY 1:2 dst")
    assert b"NO [LIMIT]" in done, done
    assert count(imap, b"dst") == 1


def test_copy_sequence_number_beyond_mailbox_is_bad(imap: Session) -> None:
    """COPY of a sequence number beyond EXISTS is a client error (BAD), nothing copied."""
    ok(imap, b"CREATE dst")
    _selected_with(imap, [b""])
    _, done = imap.command(b"COPY 1:5 dst")
    assert b" BAD" in done
    assert count(imap, b"dst") == 0


def test_lsub_lists_subscribed_name_that_does_not_exist(imap: Session) -> None:
    """LSUB keeps a subscribed name after its mailbox is deleted (RFC 3501 6.3.6)."""
    ok(imap, b"CREATE gone")
    ok(imap, b"SUBSCRIBE gone")
    ok(imap, b"DELETE gone")
    lines = listed(ok(imap, b'LSUB "" "*"'), b"LSUB")
    assert [ln.rsplit(b" ", 1)[1] for ln in lines] == [b'"gone"']


def test_command_pipelined_behind_append_waits(tmp_path: Path) -> None:
    """A command pipelined behind an APPEND still writing its file is answered after it."""
    pending: list[tuple[defer.Deferred[Any], Callable[[], Any]]] = []

    def later(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        pending.append((d, lambda: f(*args, **kwargs)))
        return d

    session = make_session(tmp_path, state="unauth")
    store = MaildirStore(tmp_path / "mail", clock=session.clock, run_blocking=later)
    session.server.account = store.account("alice@example.org")
    session.server.state = "auth"
    session.send(b"a1 APPEND INBOX {%d}\r\n" % len(MESSAGE))
    assert session.output().startswith(b"+")
    session.send(MESSAGE + b"\r\na2 STATUS INBOX (MESSAGES)\r\n")
    assert session.output() == b""
    out = b""
    while pending:  # the message's copy into tmp/, then the fsyncs of cur/ and the uid list
        d, work = pending.pop(0)
        d.callback(work())
        out += session.output()
    session.clock.advance(0)  # the next command is read on the turn after an answer
    out += session.output()
    assert out.index(b"a1 OK") < out.index(b"* STATUS") < out.index(b"a2 OK"), out
    assert b"MESSAGES 1" in out


@pytest.mark.parametrize(
    "line",
    [
        b"LIST",
        b'LIST ""',
        b"SELECT",
        b'SELECT "INBOX',
        b"STATUS INBOX MESSAGES",
        b"STATUS INBOX (MESSAGES",
        b"APPEND INBOX",
        b"APPEND INBOX (\\Seen {3}",
        b'APPEND INBOX "22-Feb-2008 17:06:23 +0000" (\\Seen) {3}',
        b"APPEND INBOX {3} extra",
        b"CREATE a b",
        b"RENAME a",
        b"SUBSCRIBE",
        b"DELETE a(b",
        b"COPY 1",
        b"MOVE x INBOX",
    ],
)
def test_malformed_commands_get_tagged_bad(imap: Session, line: bytes) -> None:
    """Syntax errors in mailbox commands are answered with a tagged BAD; the session goes on."""
    if line.startswith((b"COPY", b"MOVE")):
        append(imap, b"INBOX")
        ok(imap, b"SELECT INBOX")
    _, done = imap.command(line)
    assert b" BAD" in done, (line, done)
    ok(imap, b"NOOP")
