"""The wire mixin: line limits, error answers, unknown and misplaced commands, resp-text, ID.

Issue 2 items 8 (overlong lines, 8-bit input), 10 (text after response
codes) and 13 (ID, 64 KiB lines); every failure of a command gets a tagged
answer with an RFC 5530 code, never a dropped connection.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer
from twisted.logger import capturedLogs

from tests.imap.harness import Session
from tests.imap.wire_support import open_session, stock_defect, tagged
from transcoder import __version__
from transcoder.errors import BadCommand, ClientError, MailboxNotFound, ServerError
from transcoder.imap.server import TranscodingIMAP4Server
from transcoder.imap.settings import ServerSettings

OURS = TranscodingIMAP4Server
OUR_ID = b'* ID ("name" "imap-transcoder" "version" "' + __version__.encode() + b'")'


def assert_open(session: Session) -> None:
    """The connection is neither closed nor closing, and still answers."""
    assert not session.transport.disconnecting
    _, done = session.command(b"NOOP")
    assert b" OK " in done, done


def faulty(server_class: type) -> type:
    """``server_class`` with test commands whose handler or parser fails in given ways."""

    class Faulty(server_class):  # type: ignore[misc, valid-type]
        def do_BOOM(self, tag: bytes) -> None:
            raise RuntimeError("secret internal detail")

        def do_GONE(self, tag: bytes) -> None:
            raise MailboxNotFound("No such mailbox")

        def do_LATER(self, tag: bytes) -> defer.Deferred[None]:
            return defer.fail(ClientError("Not now", code="INUSE"))

        def do_ARG(self, tag: bytes, arg: object) -> None:
            self.sendPositiveResponse(tag, b"ARG completed")

        def arg_later_bad(self, line: bytes) -> defer.Deferred[None]:
            return defer.fail(BadCommand("Bad argument"))

        def arg_bad(self, line: bytes) -> None:
            raise BadCommand("Bad argument")

        unauth_BOOM = (do_BOOM,)
        unauth_GONE = (do_GONE,)
        unauth_LATER = (do_LATER,)
        unauth_ARGLATER = (do_ARG, arg_later_bad)
        unauth_ARGNOW = (do_ARG, arg_bad)

    return Faulty


# -- defects of Twisted's stock server ------------------------------------------


@stock_defect
def check_long_command_line_accepted(server_class: type, tmp_path: Path) -> None:
    """A 64 KiB command line is parsed and answered, not cut off (Twisted stops at 16 KiB)."""
    session = open_session(server_class, tmp_path)
    _, done = session.command(b'LOGIN "' + b"u" * 65536 + b'" pw')
    assert b"TOOBIG" not in done and b" BAD " not in done, done[:80]
    assert_open(session)


@stock_defect
def check_long_uid_fetch_accepted(server_class: type, tmp_path: Path) -> None:
    """A UID FETCH with a 64 KiB sequence set is answered OK."""
    session = open_session(server_class, tmp_path, state="select")
    uids = b",".join(b"%d" % n for n in range(1, 13000))
    assert len(uids) > 65536
    _, done = session.command(b"UID FETCH " + uids + b" (FLAGS)")
    assert b" OK " in done, done
    assert_open(session)


@stock_defect
def check_overlong_line_is_bad(server_class: type, tmp_path: Path) -> None:
    """A line over max_line_length gets a tagged BAD [TOOBIG], and the next command works."""
    session = open_session(server_class, tmp_path)
    session.send(b"a NOOP " + b"x" * (128 * 1024) + b"\r\nb NOOP\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a BAD [TOOBIG] "), out[:100]
    assert tagged(out, b"b")[0].startswith(b"b OK"), out[:100]
    assert_open(session)


@stock_defect
def check_overlong_line_in_pieces_is_bad(server_class: type, tmp_path: Path) -> None:
    """An overlong line arriving in pieces gets one BAD; reading resumes after its CRLF."""
    session = open_session(server_class, tmp_path)
    session.send(b"a NOOP ")
    for _ in range(20):
        session.send(b"y" * 10000)
    session.send(b"yyy\r")
    session.send(b"\nb NOOP\r\n")
    out = session.output()
    assert out.count(b"BAD") == 1 and out.startswith(b"a BAD [TOOBIG] "), out[:100]
    assert tagged(out, b"b")[0].startswith(b"b OK"), out[:100]


@stock_defect
def check_handler_exception_answered(server_class: type, tmp_path: Path) -> None:
    """An exception in a command gives a tagged NO [SERVERBUG], no detail, and a log entry."""
    session = open_session(faulty(server_class), tmp_path)
    with capturedLogs() as events:
        _, done = session.command(b"BOOM")
    assert done.endswith(b" NO [SERVERBUG] Internal server error"), done
    assert b"secret" not in session.transport.value()
    assert any(e.get("log_failure") is not None for e in events)
    assert_open(session)


@stock_defect
def check_client_error_answered(server_class: type, tmp_path: Path) -> None:
    """A ClientError from a handler becomes ``<status> [<code>] <text>``."""
    session = open_session(faulty(server_class), tmp_path)
    _, done = session.command(b"GONE")
    assert done.endswith(b" NO [NONEXISTENT] No such mailbox"), done
    _, done = session.command(b"LATER")
    assert done.endswith(b" NO [INUSE] Not now"), done


@stock_defect
def check_parser_errors_answered(server_class: type, tmp_path: Path) -> None:
    """A ClientError from an argument parser, raised or in a Deferred, is a tagged BAD."""
    session = open_session(faulty(server_class), tmp_path)
    for command in (b"ARGNOW x", b"ARGLATER x"):
        _, done = session.command(command)
        assert done.endswith(b" BAD [CLIENTBUG] Bad argument"), done
    assert_open(session)


@stock_defect
def check_8bit_command_answered(server_class: type, tmp_path: Path) -> None:
    """8-bit octets in a command name get a tagged BAD, not a traceback or a hang-up."""
    session = open_session(server_class, tmp_path)
    _, done = session.command(b"NO\xffOP")
    assert done.endswith(b" BAD [CLIENTBUG] Unknown command"), done
    assert_open(session)


@stock_defect
def check_unknown_command(server_class: type, tmp_path: Path) -> None:
    """An unknown command gets BAD [CLIENTBUG] Unknown command."""
    session = open_session(server_class, tmp_path)
    _, done = session.command(b"FROBNICATE now")
    assert done.endswith(b" BAD [CLIENTBUG] Unknown command"), done


@stock_defect
def check_command_in_wrong_state(server_class: type, tmp_path: Path) -> None:
    """FETCH before SELECT, or LIST before LOGIN, is BAD with a text naming the state."""
    session = open_session(server_class, tmp_path)
    _, done = session.command(b'LIST "" *')
    assert b" BAD [CLIENTBUG] " in done and b"not authenticated state" in done, done
    session = open_session(server_class, tmp_path, state="auth")
    _, done = session.command(b"FETCH 1 FLAGS")
    assert b" BAD [CLIENTBUG] " in done and b"authenticated state" in done, done
    assert b"selected" in done


@stock_defect
def check_untagged_code_has_text(server_class: type, tmp_path: Path) -> None:
    """An untagged OK carrying only a response code gets text after it."""
    session = open_session(server_class, tmp_path)
    session.server.sendPositiveResponse(None, b"[UIDVALIDITY 5]")
    # Twisted's own way of saying the mode changed: a bare untagged code.
    session.server.sendUntaggedResponse(b"[READ-WRITE]")
    lines = session.output().split(b"\r\n")
    assert lines[0] == b"* OK [UIDVALIDITY 5] UIDs valid", lines
    assert lines[1] == b"* OK [READ-WRITE] Mailbox is read-write", lines


@stock_defect
def check_id_answered(server_class: type, tmp_path: Path) -> None:
    """ID NIL and ID with a parameter list are answered with our identification."""
    session = open_session(server_class, tmp_path)
    for command in (b"ID NIL", b'ID ("name" "imaplib" "version" "3.11")'):
        untagged, done = session.command(command)
        assert untagged == [OUR_ID], untagged
        assert b" OK " in done


def test_long_command_line_accepted(tmp_path: Path) -> None:
    """A 64 KiB command line is parsed and answered, not cut off (Twisted stops at 16 KiB)."""
    check_long_command_line_accepted(OURS, tmp_path)


def test_long_uid_fetch_accepted(tmp_path: Path) -> None:
    """A UID FETCH with a 64 KiB sequence set is answered OK."""
    check_long_uid_fetch_accepted(OURS, tmp_path)


def test_overlong_line_is_bad(tmp_path: Path) -> None:
    """A line over max_line_length gets a tagged BAD [TOOBIG], and the next command works."""
    check_overlong_line_is_bad(OURS, tmp_path)


def test_overlong_line_in_pieces_is_bad(tmp_path: Path) -> None:
    """An overlong line arriving in pieces gets one BAD; reading resumes after its CRLF."""
    check_overlong_line_in_pieces_is_bad(OURS, tmp_path)


def test_handler_exception_answered(tmp_path: Path) -> None:
    """An exception in a command gives a tagged NO [SERVERBUG], no detail, and a log entry."""
    check_handler_exception_answered(OURS, tmp_path)


def test_client_error_answered(tmp_path: Path) -> None:
    """A ClientError from a handler becomes ``<status> [<code>] <text>``."""
    check_client_error_answered(OURS, tmp_path)


def test_parser_errors_answered(tmp_path: Path) -> None:
    """A ClientError from an argument parser, raised or in a Deferred, is a tagged BAD."""
    check_parser_errors_answered(OURS, tmp_path)


def test_8bit_command_answered(tmp_path: Path) -> None:
    """8-bit octets in a command name get a tagged BAD, not a traceback or a hang-up."""
    check_8bit_command_answered(OURS, tmp_path)


def test_unknown_command(tmp_path: Path) -> None:
    """An unknown command gets BAD [CLIENTBUG] Unknown command."""
    check_unknown_command(OURS, tmp_path)


def test_command_in_wrong_state(tmp_path: Path) -> None:
    """FETCH before SELECT, or LIST before LOGIN, is BAD with a text naming the state."""
    check_command_in_wrong_state(OURS, tmp_path)


def test_untagged_code_has_text(tmp_path: Path) -> None:
    """An untagged OK carrying only a response code gets text after it."""
    check_untagged_code_has_text(OURS, tmp_path)


def test_id_answered(tmp_path: Path) -> None:
    """ID NIL and ID with a parameter list are answered with our identification."""
    check_id_answered(OURS, tmp_path)


# -- further behaviour of ours ---------------------------------------------------


def test_overlong_line_limit_is_configurable(tmp_path: Path) -> None:
    """max_line_length sets the limit: one octet over it is BAD [TOOBIG]."""
    session = open_session(OURS, tmp_path, settings=ServerSettings(max_line_length=100))
    _, done = session.command(b"NOOP".ljust(100 - 3, b" "))
    assert b"TOOBIG" not in done, done
    _, done = session.command(b"NOOP".ljust(100 - 2, b" "))
    assert done.startswith(b"t2 BAD [TOOBIG] "), done


def test_overlong_line_with_nonsync_literal_skips_literal(tmp_path: Path) -> None:
    """An overlong line ending in a non-synchronizing literal has that literal skipped too."""
    session = open_session(OURS, tmp_path, settings=ServerSettings(max_line_length=100))
    session.send(b"a LOGIN " + b"u" * 200 + b" {14+}\r\nx CAPABILITY\r\n\r\nb NOOP\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a BAD [TOOBIG]"), out
    assert tagged(out, b"x") == [] and tagged(out, b"b")[0].startswith(b"b OK"), out


def test_overlong_line_without_tag_is_untagged_bad(tmp_path: Path) -> None:
    """An overlong line whose start is no tag gets an untagged BAD."""
    session = open_session(OURS, tmp_path, settings=ServerSettings(max_line_length=100))
    session.send(b"(" * 300 + b"\r\n")
    assert session.output().startswith(b"* BAD [TOOBIG] ")
    assert_open(session)


def test_empty_lines_ignored(tmp_path: Path) -> None:
    """Empty and blank lines get no answer and do not disturb the next command."""
    session = open_session(OURS, tmp_path)
    session.send(b"\r\n  \r\na NOOP\r\n")
    assert session.output() == b"a OK NOOP No operation performed\r\n"


def test_invalid_tag_is_untagged_bad(tmp_path: Path) -> None:
    """A tag with 8-bit or special octets gets an untagged BAD; a lone tag a tagged one."""
    session = open_session(OURS, tmp_path)
    for line in (b"\xe9 NOOP", b"a+b NOOP", b'"a" NOOP'):
        session.send(line + b"\r\n")
        assert session.output() == b"* BAD [CLIENTBUG] Invalid command tag\r\n", line
    session.send(b"a\r\n")
    assert session.output() == b"a BAD [CLIENTBUG] Missing command\r\n"


def test_8bit_arguments_answered(tmp_path: Path) -> None:
    """8-bit octets in arguments get a tagged answer, in every state."""
    session = open_session(OURS, tmp_path)
    _, done = session.command(b'LOGIN "\xe9\xff" "\x80"')
    assert done.split(b" ")[1] in (b"NO", b"BAD"), done
    session = open_session(OURS, tmp_path, state="auth")
    _, done = session.command(b'SELECT "\xe9\xff"')
    assert done.split(b" ")[1] in (b"NO", b"BAD"), done
    assert_open(session)


def test_too_many_arguments_is_bad(tmp_path: Path) -> None:
    """Arguments after a complete command are BAD [CLIENTBUG]."""
    session = open_session(OURS, tmp_path)
    _, done = session.command(b"CAPABILITY now")
    assert done.endswith(b" BAD [CLIENTBUG] Too many arguments"), done


def test_uid_in_auth_state_names_state(tmp_path: Path) -> None:
    """UID FETCH before SELECT is refused as a selected-state command."""
    session = open_session(OURS, tmp_path, state="auth")
    _, done = session.command(b"UID FETCH 1 FLAGS")
    assert b"BAD [CLIENTBUG] UID is not valid in the authenticated state" in done, done


def test_tagged_responses_have_text(tmp_path: Path) -> None:
    """A tagged OK/NO/BAD sent with no text, or only a code, gets text."""
    session = open_session(OURS, tmp_path)
    server = session.server
    server.sendPositiveResponse(b"a", b"")
    server.sendNegativeResponse(b"b", b"[ALERT]")
    server.sendUntaggedResponse(b"OK [UIDNEXT 4]")
    assert session.output().split(b"\r\n")[:3] == [
        b"a OK Completed",
        b"b NO [ALERT] Failed",
        b"* OK [UIDNEXT 4] Predicted next UID",
    ]


def test_greeting_has_text_after_capability(tmp_path: Path) -> None:
    """The greeting is ``* OK [CAPABILITY ...] <text>``, advertising ID and LITERAL+."""
    session = open_session(OURS, tmp_path)
    session.server.sendServerGreeting()
    greeting = session.output()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert greeting.endswith(b"] imap-transcoder IMAP4rev1 ready\r\n")
    caps = greeting.split(b"]")[0].split()
    assert b"ID" in caps and b"LITERAL+" in caps


def test_id_in_every_state(tmp_path: Path) -> None:
    """ID is answered before login, after login and with a mailbox selected."""
    for state in ("unauth", "auth", "select"):
        session = open_session(OURS, tmp_path / state, state=state)
        untagged, done = session.command(b"ID NIL")
        assert untagged[-1] == OUR_ID and b" OK " in done, (state, done)


def test_id_with_literals(tmp_path: Path) -> None:
    """ID field values may be literals."""
    session = open_session(OURS, tmp_path)
    session.send(b'a ID ("name" {4}\r\n')
    assert session.output().startswith(b"+ ")
    session.send(b'mutt "os" NIL)\r\n')
    assert session.output() == OUR_ID + b"\r\na OK ID completed\r\n"


def test_id_malformed_is_bad(tmp_path: Path) -> None:
    """Malformed ID arguments get BAD [CLIENTBUG]."""
    session = open_session(OURS, tmp_path)
    bad = [
        b"ID",
        b"ID name",
        b'ID ("name")',
        b'ID ("name" "x"',
        b"ID (name x)",
        b'ID (NIL "x")',
        b'ID ("' + b"f" * 31 + b'" "x")',
        b'ID ("name" "' + b"v" * 1025 + b'")',
        b"ID (" + b'"f" "v" ' * 31 + b")",
        b'ID ("name" "x") extra',
    ]
    for command in bad:
        untagged, done = session.command(command)
        assert untagged == [] and b" BAD [CLIENTBUG] " in done, (command, done)
    assert_open(session)


def test_send_error_answers_and_logs(tmp_path: Path) -> None:
    """send_error answers a ClientError with its status and code, a server error opaquely."""
    session = open_session(OURS, tmp_path)
    server = session.server
    with capturedLogs() as events:
        server.send_error(b"a", BadCommand("Nope"))
        assert not any(e.get("log_failure") for e in events)
        server.send_error(b"b", ServerError("disk on fire"))
        server.send_error(None, ValueError("boom"))
    assert session.output().split(b"\r\n")[:3] == [
        b"a BAD [CLIENTBUG] Nope",
        b"b NO [SERVERBUG] Internal server error",
        b"* NO [SERVERBUG] Internal server error",
    ]
    assert sum(1 for e in events if e.get("log_failure") is not None) == 2


def test_current_command_tracks_execution(tmp_path: Path) -> None:
    """current_command names the running command and is cleared by its tagged response."""
    seen = []

    class Recording(OURS):  # type: ignore[misc, valid-type]
        def do_PEEK(self, tag: bytes) -> None:
            seen.append((self.current_command, self.current_tag))
            self.sendPositiveResponse(tag, b"PEEK completed")
            seen.append((self.current_command, self.current_tag))

        unauth_PEEK = (do_PEEK,)

    session = open_session(Recording, tmp_path)
    session.command(b"PEEK")
    assert seen == [(b"PEEK", b"t1"), (None, None)]


def test_current_command_for_uid_commands(tmp_path: Path) -> None:
    """A UID command is recorded as ``UID <command>`` while it runs."""
    seen = []

    class Recording(OURS):  # type: ignore[misc, valid-type]
        def do_FETCH(self, tag: bytes, *args: object, **kwargs: object) -> None:
            seen.append(self.current_command)
            self.sendPositiveResponse(tag, b"FETCH completed")

        select_FETCH = (do_FETCH, *OURS.select_FETCH[1:])

    session = open_session(Recording, tmp_path, state="select")
    session.command(b"UID FETCH 1:* (FLAGS)")
    session.command(b"FETCH 1:* (FLAGS)")
    assert seen == [b"UID FETCH", b"FETCH"]
    assert session.server.current_command is None
