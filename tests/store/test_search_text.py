"""Text matching for SEARCH: RFC 2047 header decoding and streaming body scans."""

from __future__ import annotations

import base64
import quopri
import tracemalloc
from pathlib import Path

import pytest

from transcoder.store.search_text import (
    CHUNK_SIZE,
    SubstringFinder,
    decode_header_value,
    scan_body,
)


def run(steps) -> bool:
    """Drive a scan generator to its answer."""
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


def scan_file(path: Path, cte: str | None, charset: str | None, needle: str) -> bool:
    with path.open("rb") as fp:
        return run(scan_body(fp, 0, path.stat().st_size, cte, charset, needle))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("=?UTF-8?Q?=C3=BCber_alles?=", "über alles"),
        ("=?utf-8?b?w7xiZXI=?=", "über"),
        ("=?ISO-8859-1?Q?caf=E9?= au lait", "café au lait"),
        ("=?UTF-8?Q?a?= =?UTF-8?Q?b?=", "ab"),
        ("x =?UTF-8?Q?a?=  y", "x a  y"),
        ("=?UTF-8*en?Q?hi?=", "hi"),
        ("=?x-unknown?Q?plain?=", "plain"),
        ("=?UTF-8?B?###?=", "=?UTF-8?B?###?="),
        ("plain text", "plain text"),
        ("\xc3\xbcber", "über"),  # raw UTF-8 octets, as the parser keeps them (latin-1)
        ("caf\xe9", "café"),  # raw latin-1 octets that are not UTF-8 stay latin-1
    ],
)
def test_decode_header_value(raw: str, text: str) -> None:
    """Encoded-words decode (RFC 2047), adjacent ones join, malformed ones stay as written."""
    assert decode_header_value(raw) == text


def test_substring_finder_matches_across_pieces() -> None:
    """A needle split over two fed pieces is found; case is ignored."""
    finder = SubstringFinder("NeedLe")
    assert not finder.feed("hay hay nee")
    assert finder.feed("dle hay")


def test_substring_finder_keeps_only_overlap() -> None:
    """Only len(needle)-1 characters are retained between pieces."""
    finder = SubstringFinder("abcd")
    finder.feed("x" * 10_000)
    assert len(finder._tail) == 3


def test_base64_needle_across_chunk_boundary(tmp_path: Path) -> None:
    """A needle straddling a read-chunk boundary in a base64 body is found."""
    text = b"a" * (CHUNK_SIZE - 3) + b"NEEDLE" + b"b" * 100
    path = tmp_path / "body"
    path.write_bytes(base64.encodebytes(text))
    assert scan_file(path, "base64", "us-ascii", "needle")
    assert not scan_file(path, "base64", "us-ascii", "absent")


def test_base64_padded_per_line(tmp_path: Path) -> None:
    """Base64 whose every line is padded separately (some encoders) still decodes fully."""
    lines = [base64.b64encode(word) for word in (b"one ", b"two ", b"three")]
    path = tmp_path / "body"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    assert scan_file(path, "base64", None, "three")


def test_quoted_printable_soft_breaks_and_charset(tmp_path: Path) -> None:
    """Quoted-printable soft breaks and =XX escapes are undone, then the part charset decoded."""
    path = tmp_path / "body"
    path.write_bytes(b"Gr=FC=\r\nezi mitein=\r\nander\r\n")
    assert scan_file(path, "quoted-printable", "iso-8859-1", "grüezi miteinander")


def test_quoted_printable_long_line_without_break(tmp_path: Path) -> None:
    """A quoted-printable body with no line break at all is scanned in pieces, escapes intact."""
    body = quopri.encodestring(("é" * 200_000 + "needle").encode("utf-8"), quotetabs=False)
    path = tmp_path / "body"
    path.write_bytes(body.replace(b"=\n", b""))
    assert scan_file(path, "quoted-printable", "utf-8", "éneedle")


def test_unknown_charset_and_codec_names_fall_back(tmp_path: Path) -> None:
    """Unknown charsets, and codec names that are not charsets, never raise; ASCII still matches."""
    path = tmp_path / "body"
    path.write_bytes(b"hello world\r\n")
    for charset in ("x-nonsense", "base64", "rot13", '"utf-8"'):
        assert scan_file(path, None, charset, "WORLD")


def test_scan_yields_between_chunks(tmp_path: Path) -> None:
    """The scan is a generator yielding once per chunk, so a driver can interleave work."""
    path = tmp_path / "body"
    path.write_bytes(b"x" * (CHUNK_SIZE * 3))
    with path.open("rb") as fp:
        steps = list(scan_body(fp, 0, CHUNK_SIZE * 3, None, None, "absent"))
    assert len(steps) == 3


def test_scan_respects_start_and_end(tmp_path: Path) -> None:
    """Only fp[start:end] is searched."""
    path = tmp_path / "body"
    path.write_bytes(b"before|middle|after")
    with path.open("rb") as fp:
        assert run(scan_body(fp, 7, 13, None, None, "middle"))
    with path.open("rb") as fp:
        assert not run(scan_body(fp, 7, 13, None, None, "after"))


def test_large_base64_body_scanned_in_constant_memory(tmp_path: Path) -> None:
    """Scanning an 8 MB base64 body keeps peak memory to a few chunks, not the body."""
    path = tmp_path / "big"
    raw = b"lorem ipsum dolor sit amet " * 4096
    with path.open("wb") as out:
        for _ in range(75):  # ~8 MB of base64
            out.write(base64.encodebytes(raw))
        out.write(base64.encodebytes(b"the final NEEDLE"))
    tracemalloc.start()
    try:
        assert scan_file(path, "base64", "utf-8", "final needle")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 8_000_000
    assert peak < 2_000_000, peak
