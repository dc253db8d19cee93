"""Property: random MIME trees, serialised then parsed, give back each part's exact offsets."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from transcoder.mime import Entity, parse_message

_counter = itertools.count()

#: Body lines never start with "-": only generated delimiters may.
_line = (
    st.lists(
        st.sampled_from([b"a", b"Z", b" ", b"-", b":", b"\t", b"\xc3\xa9", b"\xff", b"=_"]),
        max_size=10,
    )
    .map(b"".join)
    .filter(lambda s: not s.startswith(b"-"))
)
_value = _line.map(lambda s: s.strip(b" \t") or b"v")
_header = st.tuples(
    st.sampled_from([b"X-A", b"Subject", b"Content-Description", b"X-Long-Name"]),
    st.lists(_value, min_size=1, max_size=3),
)
_leaf_type = st.sampled_from(
    [None, b"text/plain", b"text/html; charset=utf-8", b"application/octet-stream", b"image/png"]
)
_padding = st.sampled_from([b"", b" ", b"\t  "])


@dataclass
class Leaf:
    headers: list[tuple[bytes, list[bytes]]]
    content_type: bytes | None
    lines: list[bytes]
    trailing_eol: bool


@dataclass
class Multipart:
    subtype: bytes
    headers: list[tuple[bytes, list[bytes]]]
    preamble: list[bytes]
    parts: list[object]
    paddings: list[bytes]
    close: bool
    epilogue: list[bytes]
    boundary: bytes = field(default_factory=lambda: b"=_b%d_Xy" % next(_counter))


@dataclass
class Message:
    headers: list[tuple[bytes, list[bytes]]]
    inner: object


@dataclass
class Expected:
    header_start: int
    body_start: int
    end: int
    types: tuple[str, str]
    children: list[Expected]


_leaf = st.builds(
    Leaf, st.lists(_header, max_size=3), _leaf_type, st.lists(_line, max_size=4), st.booleans()
)


def _extend(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    multipart = st.builds(
        Multipart,
        st.sampled_from([b"mixed", b"alternative", b"related"]),
        st.lists(_header, max_size=2),
        st.lists(_line, max_size=2),
        st.lists(children, max_size=4),
        st.lists(_padding, min_size=5, max_size=5),
        st.booleans(),
        st.lists(_line, max_size=2),
    )
    message = st.builds(Message, st.lists(_header, max_size=2), children)
    return multipart | message


_tree = st.recursive(_leaf, _extend, max_leaves=8)


def _write_header(
    out: bytearray, headers: list[tuple[bytes, list[bytes]]], extra: bytes | None, eol: bytes
) -> None:
    for name, values in headers:
        out += name + b": " + (eol + b" ").join(values) + eol
    if extra is not None:
        out += b"Content-Type: " + extra + eol
    out += eol


def _emit(node: object, out: bytearray, eol: bytes) -> Expected:
    start = len(out)
    if isinstance(node, Leaf):
        _write_header(out, node.headers, node.content_type, eol)
        body_start = len(out)
        out += eol.join(node.lines) + (eol if node.trailing_eol and node.lines else b"")
        types = tuple((node.content_type or b"text/plain").split(b";")[0].decode().split("/"))
        return Expected(start, body_start, len(out), types, [])  # type: ignore[arg-type]
    if isinstance(node, Message):
        _write_header(out, node.headers, b"message/rfc822", eol)
        body_start = len(out)
        inner = _emit(node.inner, out, eol)
        return Expected(start, body_start, len(out), ("message", "rfc822"), [inner])
    assert isinstance(node, Multipart)
    _write_header(
        out, node.headers, b'multipart/%s; boundary="%s"' % (node.subtype, node.boundary), eol
    )
    body_start = len(out)
    if node.preamble:
        out += eol.join(node.preamble) + eol
    children = []
    for i, part in enumerate(node.parts):
        out += b"--" + node.boundary + node.paddings[i % 5] + eol
        children.append(_emit(part, out, eol))
        if node.close or i < len(node.parts) - 1:
            out += eol  # RFC 2046: this line break belongs to the next delimiter
    if node.close:
        out += b"--" + node.boundary + b"--"
        if node.epilogue:
            out += eol + eol.join(node.epilogue)
    return Expected(start, body_start, len(out), ("multipart", node.subtype.decode()), children)


def _lines(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _check(entity: Entity, expected: Expected, data: bytes) -> None:
    assert (entity.header_start, entity.body_start, entity.end) == (
        expected.header_start,
        expected.body_start,
        expected.end,
    )
    assert (entity.content_type.maintype, entity.content_type.subtype) == expected.types
    assert entity.body_lines == _lines(data[entity.body_start : entity.end])
    header = b"".join(f.raw for f in entity.header)
    assert data[entity.header_start : entity.body_start] in (header + b"\n", header + b"\r\n")
    assert len(entity.children) == len(expected.children)
    for child, want in zip(entity.children, expected.children, strict=True):
        _check(child, want, data)


@settings(max_examples=300, deadline=None)
@given(tree=_tree, eol=st.sampled_from([b"\r\n", b"\n"]), prefix=st.binary(max_size=5))
def test_random_trees_round_trip(tree: object, eol: bytes, prefix: bytes) -> None:
    """Offsets, types, line counts and header bytes of every generated part come back exactly."""
    out = bytearray(prefix)
    expected = _emit(tree, out, eol)
    data = bytes(out) + b"trailing octets outside the window"
    entity = parse_message(io.BytesIO(data), len(prefix), expected.end)
    _check(entity, expected, data)
