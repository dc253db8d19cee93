"""STARTTLS command injection (CVE-2011-0411 class): nothing pipelined before the handshake runs.

RFC 3501 section 6.2.1: after the tagged OK to STARTTLS, the TLS negotiation
begins; octets the client (or a man in the middle) sent in the clear behind
the command must be discarded, never executed after the handshake.
"""

from __future__ import annotations

from pathlib import Path

from tests.imap.wire_support import (
    TLSStringTransport,
    memory_portal,
    open_session,
    stock_defect,
    tagged,
)
from transcoder.imap.server import TranscodingIMAP4Server

OURS = TranscodingIMAP4Server


@stock_defect
def check_pipelined_command_discarded(server_class: type, tmp_path: Path) -> None:
    """A command in the same packet as STARTTLS is never answered."""
    session = open_session(server_class, tmp_path, tls=True)
    session.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a OK")
    assert isinstance(session.transport, TLSStringTransport)
    assert len(session.transport.tls_started_with) == 1
    assert tagged(out, b"b") == [], out
    assert b"CAPABILITY" not in out


@stock_defect
def check_pipelined_login_discarded(server_class: type, tmp_path: Path) -> None:
    """A valid LOGIN injected behind STARTTLS does not log the connection in."""
    session = open_session(server_class, tmp_path, tls=True, portal=memory_portal())
    session.send(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    session.clock.advance(9)  # let any (slowed) login answer come, before the idle timeout
    out = session.output()
    assert tagged(out, b"b") == [], out
    assert session.server.state == "unauth"
    assert session.server.account is None


@stock_defect
def check_pipelined_lines_after_several_commands_discarded(
    server_class: type, tmp_path: Path
) -> None:
    """Commands before STARTTLS run; everything after it in the packet is dropped."""
    session = open_session(server_class, tmp_path, tls=True)
    session.send(b"a NOOP\r\nb STARTTLS\r\nc NOOP\r\nd NOOP\r\n")
    out = session.output()
    assert tagged(out, b"a")[0].startswith(b"a OK")
    assert tagged(out, b"b")[0].startswith(b"b OK")
    assert tagged(out, b"c") == tagged(out, b"d") == [], out


def test_pipelined_command_discarded(tmp_path: Path) -> None:
    """A command in the same packet as STARTTLS is never answered."""
    check_pipelined_command_discarded(OURS, tmp_path)


def test_pipelined_login_discarded(tmp_path: Path) -> None:
    """A valid LOGIN injected behind STARTTLS does not log the connection in."""
    check_pipelined_login_discarded(OURS, tmp_path)


def test_pipelined_lines_after_several_commands_discarded(tmp_path: Path) -> None:
    """Commands before STARTTLS run; everything after it in the packet is dropped."""
    check_pipelined_lines_after_several_commands_discarded(OURS, tmp_path)


def test_pipelined_partial_line_discarded(tmp_path: Path) -> None:
    """Half a command sent before the handshake does not prefix the next, encrypted one."""
    session = open_session(OURS, tmp_path, tls=True)
    session.send(b"a STARTTLS\r\nb DELE")
    session.output()
    session.send(b"c NOOP\r\n")  # after the handshake
    out = session.output()
    assert out.startswith(b"c OK"), out
    assert b"DELE" not in out


def test_commands_after_handshake_run(tmp_path: Path) -> None:
    """Commands sent after the handshake (a later read) are answered normally."""
    session = open_session(OURS, tmp_path, tls=True)
    session.send(b"a STARTTLS\r\n")
    session.output()
    _, done = session.command(b"CAPABILITY")
    assert b" OK " in done


def test_starttls_with_arguments_is_bad(tmp_path: Path) -> None:
    """STARTTLS takes no arguments: with one it is BAD and TLS does not start."""
    session = open_session(OURS, tmp_path, tls=True)
    _, done = session.command(b"STARTTLS now")
    assert done.split(b" ")[1:3] == [b"BAD", b"[CLIENTBUG]"], done
    assert isinstance(session.transport, TLSStringTransport)
    assert session.transport.tls_started_with == []


def test_starttls_twice_is_bad(tmp_path: Path) -> None:
    """A second STARTTLS is refused with a clear text and TLS is not restarted."""
    session = open_session(OURS, tmp_path, tls=True)
    session.send(b"a STARTTLS\r\n")
    session.output()
    _, done = session.command(b"STARTTLS")
    assert done.endswith(b"BAD [CLIENTBUG] TLS is already active"), done
    assert isinstance(session.transport, TLSStringTransport)
    assert len(session.transport.tls_started_with) == 1


def test_starttls_without_tls_support_is_refused(tmp_path: Path) -> None:
    """Without a TLS context STARTTLS gets a tagged NO, and the connection goes on."""
    session = open_session(OURS, tmp_path, tls=False)
    _, done = session.command(b"STARTTLS")
    assert b" NO " in done, done
    _, done = session.command(b"NOOP")
    assert b" OK " in done
