"""Literal limits: oversized, malformed and non-synchronizing literals (RFC 3501 4.3, RFC 7888).

An oversized literal is refused with a tagged ``NO [TOOBIG]`` before the
continuation request, so its octets are never sent; a non-synchronizing
literal whose command is refused is read and discarded, never executed as
commands; the connection stays usable throughout.
"""

from __future__ import annotations

from pathlib import Path

from tests.imap.wire_support import open_session, stock_defect, tagged
from transcoder import __version__
from transcoder.imap.command_order import HELD_BUFFER
from transcoder.imap.server import TranscodingIMAP4Server
from transcoder.imap.settings import ServerSettings

OURS = TranscodingIMAP4Server


def assert_usable(session: object, tag: bytes = b"z") -> None:
    """The connection still answers a command."""
    session.send(tag + b" NOOP\r\n")  # type: ignore[attr-defined]
    out = session.output()  # type: ignore[attr-defined]
    assert tagged(out, tag)[0].startswith(tag + b" OK"), out


@stock_defect
def check_append_over_limit_refused_before_continuation(server_class: type, tmp_path: Path) -> None:
    """APPEND of more than max_literal_size (64 MiB) gets NO [TOOBIG] and no "+"."""
    session = open_session(server_class, tmp_path, state="auth")
    session.send(b"a APPEND INBOX {100000000}\r\n")
    out = session.output()
    assert not out.startswith(b"+"), out
    assert out.startswith(b"a NO [TOOBIG] "), out
    assert_usable(session)


@stock_defect
def check_string_literal_over_limit_refused(server_class: type, tmp_path: Path) -> None:
    """A string-argument literal over max_astring_literal_size gets NO [TOOBIG], no "+"."""
    session = open_session(server_class, tmp_path)
    session.send(b"a LOGIN {300000}\r\n")
    out = session.output()
    assert out.startswith(b"a NO [TOOBIG] "), out
    assert_usable(session)


@stock_defect
def check_string_literal_of_64k_accepted(server_class: type, tmp_path: Path) -> None:
    """A 64 KiB string literal (Twisted caps them at 4 KiB) is read and the command answered."""
    session = open_session(server_class, tmp_path)
    session.send(b"a LOGIN {65536}\r\n")
    assert session.output().startswith(b"+ "), "no continuation request"
    session.send(b"u" * 65536 + b" pw\r\n")
    answer = tagged(session.output(), b"a")
    assert answer and b"BAD" not in answer[0], answer
    assert_usable(session)


@stock_defect
def check_huge_octet_count_refused(server_class: type, tmp_path: Path) -> None:
    """An absurd octet count is refused as too big, not sent a continuation."""
    session = open_session(server_class, tmp_path)
    session.send(b"a LOGIN {99999999999999999999}\r\n")  # 20 digits
    out = session.output()
    assert out.startswith(b"a NO [TOOBIG] "), out
    assert_usable(session)


@stock_defect
def check_negative_literal_refused(server_class: type, tmp_path: Path) -> None:
    """A negative octet count is a syntax error, answered before any continuation."""
    session = open_session(server_class, tmp_path)
    session.send(b"a LOGIN {-5}\r\n")
    out = session.output()
    assert out.startswith(b"a BAD "), out
    assert_usable(session)


@stock_defect
def check_nonsync_literal_of_refused_command_not_executed(
    server_class: type, tmp_path: Path
) -> None:
    """The octets of a non-synchronizing literal of a refused command never run as commands."""
    session = open_session(server_class, tmp_path)
    # SELECT is not valid before login; its literal holds a command line.
    session.send(b"a SELECT {14+}\r\nx CAPABILITY\r\n\r\nb NOOP\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a BAD"), out
    assert tagged(out, b"x") == [], out
    assert tagged(out, b"b")[0].startswith(b"b OK"), out


@stock_defect
def check_nonsync_literal_over_limit_discarded(server_class: type, tmp_path: Path) -> None:
    """A too-large non-synchronizing literal gets NO [TOOBIG]; its octets are skipped."""
    settings = ServerSettings(max_astring_literal_size=16)
    session = open_session(server_class, tmp_path, settings=settings)
    literal = b"x CAPABILITY\r\n".ljust(40, b".")
    session.send(b"a LOGIN {40+}\r\n" + literal + b" pw\r\nb NOOP\r\n")
    out = session.output()
    assert not out.startswith(b"+"), out
    assert tagged(out, b"a")[0].startswith(b"a NO [TOOBIG] "), out
    assert tagged(out, b"x") == [], out
    assert tagged(out, b"b")[0].startswith(b"b OK"), out


def test_append_over_limit_refused_before_continuation(tmp_path: Path) -> None:
    """APPEND of more than max_literal_size (64 MiB) gets NO [TOOBIG] and no "+"."""
    check_append_over_limit_refused_before_continuation(OURS, tmp_path)


def test_string_literal_over_limit_refused(tmp_path: Path) -> None:
    """A string-argument literal over max_astring_literal_size gets NO [TOOBIG], no "+"."""
    check_string_literal_over_limit_refused(OURS, tmp_path)


def test_string_literal_of_64k_accepted(tmp_path: Path) -> None:
    """A 64 KiB string literal (Twisted caps them at 4 KiB) is read and the command answered."""
    check_string_literal_of_64k_accepted(OURS, tmp_path)


def test_huge_octet_count_refused(tmp_path: Path) -> None:
    """An absurd octet count is refused as too big, not sent a continuation."""
    check_huge_octet_count_refused(OURS, tmp_path)


def test_negative_literal_refused(tmp_path: Path) -> None:
    """A negative octet count is a syntax error, answered before any continuation."""
    check_negative_literal_refused(OURS, tmp_path)


def test_nonsync_literal_of_refused_command_not_executed(tmp_path: Path) -> None:
    """The octets of a non-synchronizing literal of a refused command never run as commands."""
    check_nonsync_literal_of_refused_command_not_executed(OURS, tmp_path)


def test_nonsync_literal_over_limit_discarded(tmp_path: Path) -> None:
    """A too-large non-synchronizing literal gets NO [TOOBIG]; its octets are skipped."""
    check_nonsync_literal_over_limit_discarded(OURS, tmp_path)


def test_append_limit_is_configurable(tmp_path: Path) -> None:
    """max_literal_size caps APPEND: one octet over it is refused before the continuation."""
    session = open_session(
        OURS, tmp_path, state="auth", settings=ServerSettings(max_literal_size=10)
    )
    session.send(b"a APPEND INBOX {11}\r\n")
    assert session.output().startswith(b"a NO [TOOBIG] ")
    assert_usable(session)


def test_malformed_octet_counts_are_bad(tmp_path: Path) -> None:
    """Non-numeric and 5000-digit octet counts get BAD or NO, never a continuation."""
    session = open_session(OURS, tmp_path)
    for count in (b"abc", b"1_0", b" 5", b"+5", b"9" * 5000):
        session.send(b"a LOGIN {" + count + b"}\r\n")
        out = session.output()
        assert out.startswith((b"a BAD ", b"a NO ")), (count, out)
    assert_usable(session)


def test_oversized_second_literal_refused(tmp_path: Path) -> None:
    """A literal over the cap after an accepted one refuses the command, no second "+"."""
    session = open_session(OURS, tmp_path)
    session.send(b"a LOGIN {5}\r\n")
    assert session.output().startswith(b"+ ")
    session.send(b"alice {300000}\r\n")
    out = session.output()
    assert out.startswith(b"a NO [TOOBIG] "), out
    assert_usable(session)


def test_literal_plus_advertised(tmp_path: Path) -> None:
    """CAPABILITY lists LITERAL+ (RFC 7888)."""
    session = open_session(OURS, tmp_path)
    untagged, _ = session.command(b"CAPABILITY")
    assert b"LITERAL+" in untagged[0].split()


def test_nonsync_literal_read_without_continuation(tmp_path: Path) -> None:
    """A non-synchronizing literal is read at once: no "+", the command is answered."""
    session = open_session(OURS, tmp_path)
    session.send(b'a ID ("name" {3+}\r\nabc "os" {2+}\r\nxy)\r\n')
    out = session.output()
    assert not any(line.startswith(b"+") for line in out.split(b"\r\n")), out
    assert out.startswith(b"* ID ") and tagged(out, b"a")[0].startswith(b"a OK"), out


def test_nonsync_skip_spans_reads_and_chained_literals(tmp_path: Path) -> None:
    """Skipping a refused command follows its literals across reads and continuation lines."""
    settings = ServerSettings(max_astring_literal_size=16)
    session = open_session(OURS, tmp_path, settings=settings)
    session.send(b"a LOGIN {100000+}\r\n")
    for _ in range(10):
        session.send(b"x NOOP\r\n".ljust(10000, b"-"))
    session.send(b" {14+}\r\ny CAPABILITY\r\n\r\nb NOOP\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a NO [TOOBIG] "), out
    assert tagged(out, b"x") == tagged(out, b"y") == [], out
    assert tagged(out, b"b")[0].startswith(b"b OK"), out


MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nx DELETE INBOX\r\n"


def test_append_with_nonsync_literal(tmp_path: Path) -> None:
    """APPEND with a non-synchronizing literal stores the message without a continuation."""
    session = open_session(OURS, tmp_path, state="auth")
    session.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\nb NOOP\r\n")
    out = session.output()
    assert out.split(b"\r\n")[0].startswith(b"a OK"), out
    assert tagged(out, b"x") == [] and tagged(out, b"b")[0].startswith(b"b OK"), out
    untagged, _ = session.command(b"SELECT INBOX")
    assert b"* 1 EXISTS" in untagged


def test_append_nonsync_to_missing_mailbox_skips_message(tmp_path: Path) -> None:
    """A refused APPEND's non-synchronizing message is skipped, never run as commands."""
    session = open_session(OURS, tmp_path, state="auth")
    session.send(b"a APPEND Nope {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\nb NOOP\r\n")
    out = session.output()
    assert out.split(b"\r\n")[0].startswith(b"a NO [TRYCREATE]"), out
    assert tagged(out, b"x") == [] and tagged(out, b"b")[0].startswith(b"b OK"), out
    untagged, done = session.command(b"SELECT INBOX")
    assert b" OK " in done and b"* 0 EXISTS" in untagged


class SlowServer(TranscodingIMAP4Server):
    """Our server with a command that holds later ones back, as FETCH and APPEND do."""

    def do_SLOW(self, tag: bytes) -> None:
        """Block command processing for one second of the clock."""
        self.blocked = []

        def done() -> None:
            self.sendPositiveResponse(tag, b"SLOW completed")
            self._unblock()

        self.clock.callLater(1, done)

    unauth_SLOW = (do_SLOW,)


def test_literal_waits_behind_blocking_command(tmp_path: Path) -> None:
    """A literal pipelined behind a command that blocks is read intact once that command ends."""
    session = open_session(SlowServer, tmp_path)
    session.send(b'a SLOW\r\nb ID ("name" {4+}\r\nx\r\ny "v" "w")\r\nc NOOP\r\n')
    assert session.output() == b""
    assert session.server.paused  # held unparsed (the socket pauses past 64 KiB held)
    session.clock.advance(1)
    out = session.output()
    assert out.split(b"\r\n")[:4] == [
        b"a OK SLOW completed",
        b'* ID ("name" "imap-transcoder" "version" "%s")' % __version__.encode(),
        b"b OK ID completed",
        b"c OK NOOP No operation performed",
    ], out
    assert session.transport.producerState == "producing"


def test_endless_pipelining_behind_a_blocking_command_stops_reading_the_socket(
    tmp_path: Path,
) -> None:
    """Held input is buffered up to HELD_BUFFER octets; past that the socket is not read
    (TCP holds the client back); every command is answered in order once the first ends."""
    session = open_session(SlowServer, tmp_path)
    session.send(b"a SLOW\r\n")
    noops = b"".join(b"n%d NOOP\r\n" % i for i in range(8000))
    session.send(noops[: HELD_BUFFER // 2])
    assert session.transport.producerState == "producing"
    session.send(noops[HELD_BUFFER // 2 :])
    assert session.transport.producerState == "paused"
    assert session.output() == b""
    session.clock.advance(1)
    for _ in range(5):
        session.clock.advance(0)
    tags = [line.split(b" ", 1)[0] for line in session.output().split(b"\r\n") if line]
    assert tags == [b"a"] + [b"n%d" % i for i in range(8000)]
    assert session.transport.producerState == "producing"
