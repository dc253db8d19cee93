"""The INSTREAM client (issue 16) against a real clamd with a test-written signature: EICAR
is found, a clean message passes, a stopped clamd fails closed; the sans-IO framing."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.scan.clamd_fixture import EICAR, EICAR_FOUND, Clamd, running_clamd
from transcoder.errors import ConfigurationError
from transcoder.scan import ClamdScanner, MessageInfected, ScannerUnavailable
from transcoder.scan.clamd import instream_frames, parse_reply


@pytest.fixture(scope="module")
def clamd() -> Iterator[Clamd]:
    with running_clamd() as running:
        yield running


def test_eicar_is_found_clean_passes(clamd: Clamd) -> None:
    """EICAR inside a MIME message is reported by name; a clean message is OK; the source
    is left rewound for the store."""
    scanner = ClamdScanner(clamd.address)
    infected = io.BytesIO(b"Subject: x\r\n\r\nhello\r\n" + EICAR + b"\r\n")
    assert scanner.scan(infected).signature == EICAR_FOUND
    assert infected.tell() == 0
    with pytest.raises(MessageInfected, match=f"message refused: {EICAR_FOUND}"):
        scanner.check(infected)
    clean = io.BytesIO(b"Subject: x\r\n\r\nhello\r\n" * 50_000)  # 1 MiB: many chunks
    assert scanner.scan(clean).clean


def test_unreachable_clamd_fails_closed(tmp_path: object) -> None:
    """No clamd at the socket: ScannerUnavailable (NO [UNAVAILABLE]), never a pass."""
    scanner = ClamdScanner("unix:/nonexistent/clamd.ctl", timeout=2)
    with pytest.raises(ScannerUnavailable) as caught:
        scanner.check(io.BytesIO(b"Subject: x\r\n\r\nhi\r\n"))
    assert caught.value.code == "UNAVAILABLE"


def test_sans_io_framing_and_replies() -> None:
    """INSTREAM frames: command, length-prefixed chunks, zero length; replies parsed, an
    ERROR or garbage is no verdict; --clamd addresses checked."""
    frames = list(instream_frames(io.BytesIO(b"abcde"), chunk=2))
    assert frames == [
        b"zINSTREAM\0",
        b"\0\0\0\2ab",
        b"\0\0\0\2cd",
        b"\0\0\0\1e",
        b"\0\0\0\0",
    ]
    assert parse_reply(b"stream: OK\0").clean
    assert parse_reply(b"stream: Eicar-Sig FOUND\0").signature == "Eicar-Sig"
    for bad in (b"INSTREAM size limit exceeded. ERROR\0", b"", b"stream:  FOUND\0"):
        with pytest.raises(ScannerUnavailable):
            parse_reply(bad)
    assert ClamdScanner.parse("tcp:127.0.0.1:3310").address == "tcp:127.0.0.1:3310"
    for bad_address in ("clamd", "tcp:host", "unix:", "tcp::33"):
        with pytest.raises(ConfigurationError):
            ClamdScanner.parse(bad_address)


def test_server_option_is_checked(tmp_path: object) -> None:
    """twistd transcoder --clamd with a malformed address stops at the command line."""
    from twisted.python import usage

    from transcoder.service import Options

    with pytest.raises(usage.UsageError, match="--clamd takes"):
        Options().parseOptions(["--data", str(tmp_path), "--clamd", "clamd.ctl"])
    options = Options()
    options.parseOptions(["--data", str(tmp_path), "--clamd", "unix:/run/clamav/clamd.ctl"])
    assert options["clamd"] == "unix:/run/clamav/clamd.ctl"
