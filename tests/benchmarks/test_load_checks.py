"""The load generator's response reader and protocol checks (benchmarks/load_*.py).

The checks decide what counts as a server's protocol error in
``benchmarks/imap_load.py``; these tests pin each rule on hand-written
responses, so a reported error is the server's, not the checker's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from load_checks import Command, ErrorLog, ProtocolChecker
from load_client import Spec, check_pipeline, command_name
from load_wire import ResponseReader, WireError, fetch_items, parse_response, tokens


def selected(count: int, flags: bytes = b"") -> ProtocolChecker:
    """A checker whose session selected a mailbox of ``count`` messages, UIDs 1..count."""
    checker = ProtocolChecker(ErrorLog())
    checker.sent(Command(b"S", "SELECT", "SELECT", b"S SELECT INBOX"))
    feed(checker, b"* FLAGS (\\Seen \\Deleted " + flags + b")", b"* %d EXISTS" % count)
    feed(checker, *(b"* %d FETCH (UID %d)" % (n, n) for n in range(1, count + 1)), b"S OK done")
    return checker


def feed(checker: ProtocolChecker, *lines: bytes) -> None:
    """Pass each response line (no CRLF) to the checker."""
    for line in lines:
        response = parse_response(line)
        if response.kind == "tagged":
            checker.tagged(response)
        else:
            checker.untagged(response)


def send(checker: ProtocolChecker, tag: bytes, line: bytes) -> None:
    """Mark ``tag line`` as written."""
    checker.sent(Command(tag, command_name(line), "x", tag + b" " + line))


def test_reader_frames_literals_fed_one_octet_at_a_time() -> None:
    """A literal's octets are data even when they hold CRLF and what looks like a response."""
    reader = ResponseReader()
    wire = b"* 1 FETCH (UID 7 BODY[] {16}\r\nx\r\n* 3 EXPUNGE\r\n)\r\nA1 OK done\r\n"
    responses = [r for octet in wire for r in reader.feed(bytes([octet]))]
    assert [r.name for r in responses] == [b"FETCH", b"OK"]
    assert fetch_items(responses[0].data)[b"BODY[]"] == b"x\r\n* 3 EXPUNGE\r\n"
    assert reader.pending == 0


def test_tokens_keep_sections_whole_and_unescape_quoted_strings() -> None:
    """BODY[HEADER.FIELDS (FROM)] is one atom; a quoted string loses its escapes; NIL is None."""
    assert tokens(b'(BODY[HEADER.FIELDS (FROM)]<0> "a\\"b" NIL)') == [
        [b"BODY[HEADER.FIELDS (FROM)]<0>", b'a"b', None]
    ]
    with pytest.raises(WireError):
        tokens(b"(UID 5")


def test_expunge_between_pipelined_sequence_commands_is_an_error() -> None:
    """RFC 3501 7.4.1: no EXPUNGE while a pipelined FETCH or STORE is still in progress."""
    checker = selected(5)
    send(checker, b"A1", b"FETCH 1 (FLAGS)")
    send(checker, b"A2", b"STORE 2 +FLAGS (\\Seen)")
    feed(checker, b"A1 OK done", b"* 3 EXPUNGE")
    assert list(checker.errors.counts) == ["EXPUNGE while STORE in progress (RFC 3501 7.4.1)"]


def test_expunge_during_expunge_or_uid_fetch_is_allowed() -> None:
    """EXPUNGE responses may come during EXPUNGE and the UID forms of FETCH/STORE/SEARCH."""
    checker = selected(5)
    send(checker, b"A1", b"UID FETCH 1:* (FLAGS)")
    send(checker, b"A2", b"EXPUNGE")
    feed(checker, b"* 2 EXPUNGE", b"A1 OK done", b"* 2 EXPUNGE", b"A2 OK done")
    assert checker.errors.total == 0
    assert checker.view is not None and checker.view.uids == [1, 4, 5]


def test_expunge_with_nothing_in_progress_or_beyond_the_count_is_an_error() -> None:
    """An EXPUNGE needs a command in progress and a sequence number that exists."""
    checker = selected(2)
    feed(checker, b"* 1 EXPUNGE")
    send(checker, b"A1", b"NOOP")
    feed(checker, b"* 2 EXPUNGE")
    assert set(checker.errors.counts) == {
        "EXPUNGE with no command in progress (RFC 3501 7.4.1)",
        "EXPUNGE of a number above the message count",
    }


def test_unannounced_keyword_is_an_error_until_flags_names_it() -> None:
    """RFC 3501 7.2.6: FETCH FLAGS keywords must be in the latest FLAGS; system flags need not."""
    checker = selected(2)
    send(checker, b"A1", b"NOOP")
    feed(checker, b"* 1 FETCH (FLAGS (\\Seen \\Recent $Label1))")
    feed(checker, b"* FLAGS (\\Seen $label1)", b"* 2 FETCH (FLAGS ($Label1))")
    assert checker.errors.counts == {
        "keyword in FETCH FLAGS not announced by FLAGS (RFC 3501 7.2.6)": 1
    }


def test_uid_map_inconsistencies_are_errors() -> None:
    """A FETCH beyond the count, a changed UID, a reused UID, a UID out of order."""
    checker = selected(3)
    send(checker, b"A1", b"NOOP")
    feed(checker, b"* 4 FETCH (UID 9)", b"* 2 FETCH (UID 8)", b"* 3 EXPUNGE", b"* 3 EXISTS")
    feed(checker, b"* 3 FETCH (UID 3)", b"* 1 EXISTS")
    assert set(checker.errors.counts) == {
        "FETCH of a number above the message count",
        "UID of a sequence number changed without EXPUNGE",
        "an expunged UID reappeared (RFC 3501 2.3.1.1)",
        "EXISTS lowers the message count (RFC 3501 5.2)",
    }
    checker = selected(0)
    send(checker, b"A2", b"NOOP")
    feed(checker, b"* 2 EXISTS", b"* 2 FETCH (UID 5)", b"* 1 FETCH (UID 6)")
    assert list(checker.errors.counts) == ["UIDs not strictly ascending (RFC 3501 2.3.1.1)"]


def test_tagged_responses_and_refusals() -> None:
    """Unknown tags, NO/BAD with their text, and NO [EXPUNGEISSUED] apart."""
    checker = selected(2)
    send(checker, b"A1", b"FETCH 1 (BODY[])")
    send(checker, b"A2", b"STORE 1 +FLAGS (x)")
    feed(checker, b"A1 NO [EXPUNGEISSUED] gone", b"A2 NO [CANNOT] 12 flags (0.001 + 0.000 secs).")
    feed(checker, b"A9 OK what")
    assert checker.errors.expunge_issued == {"NO [EXPUNGEISSUED] to FETCH": 1}
    assert set(checker.errors.counts) == {
        "NO to STORE: [CANNOT] N flags",
        "tagged response for no command in progress",
    }


def test_store_answer_must_show_the_flag_and_sizes_must_agree() -> None:
    """The FETCH a STORE +FLAGS causes shows the flag; BODY[] is RFC822.SIZE octets long."""
    checker = selected(2)
    send(checker, b"A1", b"FETCH 1 (RFC822.SIZE)")
    checker.in_progress[b"A2"] = Command(
        b"A2", "STORE", "x", b"A2 STORE 1 +FLAGS (\\Seen)", stored=(1, b"\\Seen")
    )
    feed(checker, b"* 1 FETCH (UID 1 RFC822.SIZE 5)", b"A1 OK done")
    feed(checker, b"* 1 FETCH (FLAGS ())", b"A2 OK done")
    send(checker, b"A3", b"FETCH 1 (BODY.PEEK[])")
    feed(checker, b"* 2 FETCH (UID 2 RFC822.SIZE 0 BODY[] NIL)")  # Dovecot, once expunged
    feed(checker, b"* 1 FETCH (UID 1 BODY[] {4}\r\nabcd)", b"A3 OK done")
    assert set(checker.errors.counts) == {
        "FETCH after STORE +FLAGS lacks the flag stored",
        "BODY[] length differs from RFC822.SIZE (RFC 3501 6.4.5)",
    }


def test_appenduid_must_be_a_new_uid() -> None:
    """APPENDUID names a UID above every UID the session has seen in the mailbox."""
    checker = selected(3)
    feed(checker, b"* OK [UIDVALIDITY 7] ok")
    send(checker, b"A1", b"APPEND INBOX")
    send(checker, b"A2", b"APPEND INBOX")
    feed(checker, b"A1 OK [APPENDUID 7 4] done", b"A2 OK [APPENDUID 7 2] done")
    assert list(checker.errors.counts) == [
        "APPENDUID not above the UIDs already assigned (RFC 3501 2.3.1.1)"
    ]


def test_pipelines_follow_rfc_3501_section_5_5() -> None:
    """Sequence-number commands may follow only FETCH, STORE or SEARCH in a pipeline."""
    check_pipeline(
        [Spec("f", b"FETCH 1 (FLAGS)"), Spec("s", b"STORE 1 +FLAGS (x)"), Spec("n", b"NOOP")]
    )
    for first in (b"NOOP", b"UID SEARCH ALL"):
        with pytest.raises(ValueError):
            check_pipeline([Spec("x", first), Spec("f", b"FETCH 1 (FLAGS)")])
