"""STORE, COPY, MOVE, UID EXPUNGE arguments: malformed is BAD [CLIENTBUG], long sets are cheap.

``benchmarks/fuzz_commands.py --quick`` found ``STORE 2:*,2:* FLAGS.SILENT``
(no flags) answered ``NO [SERVERBUG]`` with a traceback from Twisted's
``arg_flaglist``; and these commands parsed their message sets with
Twisted's ``parseIdList``, which merges the ranges once per number: a
54 KB set held the reactor for 19 s in the attack run (33 s on the
development machine).  Every STORE line, however malformed, gets one tagged
answer with a response code, logs nothing above info, and leaves the
connection usable; a 54 KB set is parsed in linear time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.imap.harness import Session, selected_session
from tests.security.test_fetch_syntax import quietly_bad
from transcoder.errors import BadCommand
from transcoder.imap.store_syntax import StoreAction, parse_store_action

MESSAGE = b"From: a@example.org\r\nSubject: store\r\n\r\nbody\r\n"

#: The fuzzer's finding, and the same hole in other forms.
MISSING_FLAGS = [
    b"STORE 2:*,2:* FLAGS.SILENT",
    b"STORE 1 +FLAGS",
    b"STORE 1 -FLAGS.SILENT",
    b"UID STORE 1 FLAGS",
    b"STORE 1 FLAGS ",
]
#: Other lines RFC 3501 section 9 does not allow.
MALFORMED = [
    b"STORE",
    b"STORE 1",
    b"STORE 0 +FLAGS (\\Seen)",
    b"STORE 1:2:3 +FLAGS (\\Seen)",
    b"STORE 1,,2 +FLAGS (\\Seen)",
    b"STORE 4294967296 +FLAGS (\\Seen)",
    b"STORE x +FLAGS (\\Seen)",
    b"STORE 1 +FLAGX (\\Seen)",
    b"STORE 1 *FLAGS (\\Seen)",
    b"STORE 1 +FLAGS.SILENT.SILENT (\\Seen)",
    b"STORE 1 +FLAGS (\\Seen",
    b"STORE 1 +FLAGS \\Seen)",
    b"STORE 1 +FLAGS ((\\Seen))",
    b"STORE 1 +FLAGS (\\Seen) (\\Deleted)",
    b"STORE 1 +FLAGS (\\Seen  \\Deleted)",
    b"STORE 1 +FLAGS  (\\Seen)",
    b"STORE 1 +FLAGS (\\Recent)",
    b"STORE 1 +FLAGS (\\Bogus)",
    b"STORE 1 +FLAGS (\\*)",
    b"STORE 1 +FLAGS (\\)",
    b"STORE 1 +FLAGS (caf\xc3\xa9)",
    b"STORE 1 +FLAGS (a]b)",
    b'STORE 1 +FLAGS ("quoted")',
    b"STORE 1 +FLAGS ({5}",
    b"UID STORE 1:* FLAGS (%)",
    b"UID EXPUNGE 1::2",
    b"UID EXPUNGE 1 2",
    b"COPY 1:x INBOX",
    b"UID MOVE ,1 INBOX",
]


def selected(directory: Path) -> Session:
    """A logged-in session with two messages, INBOX selected."""
    return selected_session(directory, MESSAGE, MESSAGE)


def assert_usable(session: Session) -> None:
    """The connection still serves a STORE."""
    untagged, done = session.command(b"STORE 1:2 +FLAGS (\\Flagged)")
    assert done.split()[1] == b"OK", done
    assert len([line for line in untagged if b" FETCH (FLAGS (" in line]) == 2, untagged


@pytest.mark.parametrize("line", MISSING_FLAGS + MALFORMED)
def test_malformed_store_is_bad_without_traceback(tmp_path: Path, line: bytes) -> None:
    """Each malformed line gets one tagged BAD [CLIENTBUG], changes nothing, logs nothing loud."""
    session = selected(tmp_path)
    out = quietly_bad(session, line)
    assert not any(reply.startswith(b"* ") for reply in out.split(b"\r\n")), out
    assert_usable(session)


def test_well_formed_store_forms(tmp_path: Path) -> None:
    """Replace, add, remove, bare flags, .SILENT and UID STORE answer as RFC 3501 6.4.6 says."""
    session = selected(tmp_path)
    untagged, done = session.command(b"STORE 1 flags (\\seen Custom custom)")
    assert done.split()[1] == b"OK", done
    assert b"* 1 FETCH (FLAGS (\\Seen Custom \\Recent))" in untagged, untagged
    untagged, _ = session.command(b"STORE 1:2 +FLAGS \\Flagged $Label1")
    assert b"* 2 FETCH (FLAGS (\\Flagged $Label1 \\Recent))" in untagged, untagged
    untagged, _ = session.command(b"STORE 1 -FLAGS.SILENT (Custom)")
    assert not any(b"FETCH" in line for line in untagged), untagged
    untagged, _ = session.command(b"UID STORE 2 FLAGS ()")
    assert any(line.startswith(b"* 2 FETCH (") and b"UID 2" in line for line in untagged)
    untagged, _ = session.command(b"FETCH 1:2 (FLAGS)")
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Seen $Label1 \\Recent))" in untagged, untagged
    assert b"* 2 FETCH (FLAGS (\\Recent))" in untagged, untagged


def test_parser_values() -> None:
    """parse_store_action: mode, silence, canonical flags, no duplicates; errors are BadCommand."""
    assert parse_store_action(b"-flags.silent (\\DELETED a A)") == StoreAction(
        -1, True, ("\\Deleted", "a")
    )
    assert parse_store_action(b"FLAGS ()") == StoreAction(0, False, ())
    assert parse_store_action(b"+FLAGS \\Seen") == StoreAction(1, False, ("\\Seen",))
    with pytest.raises(BadCommand):
        parse_store_action(b"FLAGS")


#: Commands whose message set is the issue's 54 KB of separate numbers.
LONG_SET_COMMANDS = [
    b"STORE %s +FLAGS.SILENT (\\Seen)",
    b"UID STORE %s +FLAGS (\\Seen)",
    b"UID COPY %s INBOX",
    b"UID MOVE %s INBOX",
    b"UID EXPUNGE %s",
]


@pytest.mark.parametrize("template", LONG_SET_COMMANDS)
def test_long_message_set_is_parsed_in_linear_time(tmp_path: Path, template: bytes) -> None:
    """A 54 KB set of 10,000 separate numbers is answered at once (Twisted's parser: 19-33 s).

    The bound is about 100 times what the command needs here, in CPU time.
    """
    session = selected(tmp_path)
    numbers = b",".join(b"%d" % (2 * i + 1) for i in range(10_000))
    assert len(numbers) > 54_000
    started = time.process_time()
    _, done = session.command(template % numbers)
    elapsed = time.process_time() - started
    assert done.split()[1] == b"OK", done
    assert elapsed < 2.0, elapsed
