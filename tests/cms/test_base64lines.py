"""Base64LineWriter: the same lines however the input is cut, equal to the stdlib's."""

from __future__ import annotations

import base64
import io
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from transcoder.cms.base64lines import HEADROOM, Base64LineWriter


def reference(data: bytes) -> bytes:
    """RFC 2045 base64 lines with CRLF, from the standard library."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    chunked=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_any_cutting_gives_the_reference_lines(
    data: bytes, cuts: list[int], chunked: list[bool]
) -> None:
    """Pieces given by write() or write_chunk() in any sizes produce the stdlib's lines."""
    out = io.BytesIO()
    writer = Base64LineWriter(out)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        piece = data[start:end]
        if chunked[index]:
            buffer = memoryview(bytearray(HEADROOM) + bytearray(piece))
            writer.write_chunk(buffer, HEADROOM + len(piece))
        else:
            writer.write(piece)
    assert writer.close() == len(out.getvalue())
    assert out.getvalue() == reference(data)


def test_large_runs_of_lines() -> None:
    """A megabyte in one chunk (tens of thousands of lines at once) is still exact."""
    data = bytes(range(256)) * 4096 + b"tail"
    out = io.BytesIO()
    writer = Base64LineWriter(out)
    buffer = memoryview(bytearray(HEADROOM) + bytearray(data))
    writer.write(b"abc")
    writer.write_chunk(buffer, len(buffer))
    writer.close()
    assert out.getvalue() == reference(b"abc" + data)
