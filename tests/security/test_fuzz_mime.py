"""Fuzzing the MIME splitter: hostile messages parse into consistent offsets, in linear time.

A hostile sender controls every octet of a message the server later splits
for FETCH, SEARCH and the transcoders (:func:`transcoder.mime.parse_message`,
which never raises).  Messages of the MIME corpus, mutated (bytes flipped,
ranges dropped or repeated, delimiter lines and long lines put in), must give
an entity tree whose offsets are consistent: each part lies in its parent,
in order, its header fields are the source octets; the header parsers never
raise either.  Pathological shapes -- deep nesting, ten thousand parts, long
and prefix-sharing boundaries, megabyte header lines -- must cost time in
proportion to their size: each is timed against a plain message of the same
size, with a wide margin (the quadratic cases took minutes).
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mime.corpus import CORPUS, crlf
from tests.security.fuzzing import scaled
from transcoder.mime import (
    Entity,
    content_type,
    parse_address_list,
    parse_disposition,
    parse_media_type,
    parse_message,
)
from transcoder.mime.entity import MAX_DEPTH, MAX_PARTS

SEEDS = [*CORPUS.values(), *(crlf(m) for m in CORPUS.values())]
_INSERTS = (
    b"\n--=_AbC\n",
    b"\r\n--=_AbC--\r\n",
    b"\n--outer\n\n",
    b"\nContent-Type: multipart/mixed; boundary=x\n\n--x\n",
    b"\nContent-Type: message/rfc822\n\n",
    b'\nContent-Type: multipart/digest; boundary=""\n\n',
    b"\nContent-Type: text/plain; name*0*=utf-8''%E2; name*1=x; name*=%%\n",
    b"\n\n",
    b"\r",
    b"\x00\xff",
    b" (((((\\",
    b'"',
)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few random edits: flips, deletions, repeats and hostile insertions."""
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(5)
        if op == 0 and data:
            i = min(at, len(data) - 1)
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
        elif op == 1:
            data = data[:at] + data[at + rng.randrange(1, 40) :]
        elif op == 2:
            piece = data[at : at + rng.randrange(1, 80)]
            data = data[:at] + piece * rng.randrange(2, 20) + data[at:]
        elif op == 3:
            data = data[:at] + rng.choice(_INSERTS) + data[at:]
        else:
            data = data[:at] + b"x" * rng.choice((1000, 70_000)) + data[at:]
    return data


def entities(entity: Entity, depth: int = 0) -> list[tuple[Entity, int]]:
    """Every entity of the tree with its depth, parents first."""
    found = [(entity, depth)]
    for child in entity.children:
        found += entities(child, depth + 1)
    return found


def check_tree(root: Entity, data: bytes) -> None:
    """The offsets of ``root``'s tree are consistent with ``data`` and with each other."""
    assert (root.header_start, root.end) == (0, len(data))
    everything = entities(root)
    assert len(everything) <= MAX_PARTS + 1
    for entity, depth in everything:
        assert depth <= MAX_DEPTH + 1
        assert 0 <= entity.header_start <= entity.body_start <= entity.end <= len(data)
        assert entity.body_lines >= 0
        raw = b"".join(f.raw for f in entity.header)
        assert data[entity.header_start : entity.header_start + len(raw)] == raw
        assert entity.header_start + len(raw) <= entity.body_start
        previous_end = entity.body_start
        for child in entity.children:
            assert previous_end <= child.header_start and child.end <= entity.end
            previous_end = child.end


def check_header_values(root: Entity) -> None:
    """The structured header parsers take every header value of the tree without raising."""
    for entity, _ in entities(root):
        for field in entity.header:
            value = field.value
            content_type(value)
            parse_media_type(value)
            parse_disposition(value)
            parse_address_list(value)


@scaled(300)
@given(rng=st.randoms(use_true_random=False), seed=st.sampled_from(SEEDS))
def test_mutated_messages_split_into_consistent_offsets(rng: random.Random, seed: bytes) -> None:
    """A mutated corpus message parses; parts lie in their parents, headers are source octets."""
    data = mutate(rng, seed)
    root = parse_message(io.BytesIO(data))
    check_tree(root, data)
    check_header_values(root)


@scaled(300)
@given(data=st.binary(max_size=600))
def test_random_octets_split_into_consistent_offsets(data: bytes) -> None:
    """Arbitrary octets parse as a message with consistent offsets."""
    root = parse_message(io.BytesIO(data))
    check_tree(root, data)
    check_header_values(root)


@scaled(300)
@given(value=st.text(st.characters(max_codepoint=0xFF), max_size=300))
def test_header_parsers_take_any_value(value: str) -> None:
    """Any latin-1 header value: the media type, disposition and address parsers never raise."""
    content_type(value)
    parse_media_type(value)
    parse_disposition(value)
    parse_address_list(value)


def _boundaries(count: int, length: int, shared: bool) -> list[bytes]:
    """``count`` fresh boundaries of ``length`` octets, sharing all but 3 octets if ``shared``."""
    stem = uuid.uuid4().hex.encode() * (length // 32 + 1)
    if shared:
        return [stem[: length - 3] + b"%03d" % i for i in range(count)]
    return [(uuid.uuid4().hex.encode() * (length // 32 + 1))[:length] for _ in range(count)]


def nested(bounds: list[bytes], body: bytes) -> bytes:
    """A message nesting one multipart per boundary, innermost last, around ``body``."""
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n"
        for b in bounds
    )
    return head + b"\r\n" + body


def near_misses(bounds: list[bytes], size: int) -> bytes:
    """``size`` octets of lines that start like the first boundary's delimiter but are not."""
    line = b"--" + bounds[0][:-1] + b"#\r\n"
    return line * (size // len(line) + 1)


#: Shapes a hostile sender may use, each a function of a target size in octets.
PATHOLOGICAL: dict[str, Callable[[int], bytes]] = {
    "100 nested multiparts, 2,000-octet boundaries sharing a prefix": lambda size: nested(
        b := _boundaries(MAX_DEPTH, 2000, shared=True), near_misses(b, size)
    ),
    "100 nested multiparts, 2,000-octet distinct boundaries": lambda size: nested(
        b := _boundaries(MAX_DEPTH, 2000, shared=False), near_misses(b, size)
    ),
    "1,000 nested multiparts, short boundaries": lambda size: nested(
        _boundaries(1000, 20, shared=False), b"x\r\n" * (size // 3)
    ),
    "boundaries that are prefixes of each other": lambda size: nested(
        [b"a" * (i + 1) for i in range(MAX_DEPTH)], b"--a\r\n--aa--\r\n" * (size // 14)
    ),
    "ten thousand parts and more": lambda size: (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * (size // 11)
    ),
    "one header line of the whole size": lambda size: b"Subject: " + b"x" * size + b"\r\n\r\n",
    "a header of one-octet continuation lines": lambda size: b"X: y\r\n" + b" y\r\n" * (size // 4),
    "delimiters followed by too much padding": lambda size: (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + (b"--b" + b" " * 2000 + b"x\r\n") * (size // 2006)
    ),
}


def seconds_to_parse(data: bytes) -> float:
    """Wall time of one parse of ``data``."""
    start = time.perf_counter()
    parse_message(io.BytesIO(data))
    return time.perf_counter() - start


@pytest.mark.parametrize("shape", sorted(PATHOLOGICAL))
def test_pathological_messages_parse_in_linear_time(shape: str) -> None:
    """Each hostile shape parses within 20x a plain message of its size (+3 s for a busy CI)."""
    data = PATHOLOGICAL[shape](400_000)
    plain = b"Subject: plain\r\n\r\n" + b"The quick brown fox.\r\n" * (len(data) // 22)
    baseline = seconds_to_parse(plain)
    elapsed = seconds_to_parse(data)
    assert elapsed < 20 * baseline + 3.0, (shape, len(data), elapsed, baseline)
    check_tree(parse_message(io.BytesIO(data)), data)


def test_parameter_named_like_a_continuation_is_kept() -> None:
    """A parameter named ``*0`` (a damaged RFC 2231 name) is a plain parameter, not a crash."""
    parsed = parse_media_type('multipart/mixed;*0="split-"; boundary*1="B"')
    assert parsed is not None and parsed[2] == (("*0", "split-"),)


def test_blank_line_before_a_delimiter_belongs_to_the_delimiter() -> None:
    """A header, a blank line, then a delimiter: the part is all header, inside its parent."""
    data = (
        b"Content-Type: multipart/mixed; boundary=e\n\n--e\n"
        b"Content-Type: message/rfc822\n\ne\n\n--e\n\nlast\n--e--\n"
    )
    root = parse_message(io.BytesIO(data))
    check_tree(root, data)
    inner = root.children[0].children[0]
    assert data[inner.header_start : inner.end] == b"e\n"  # the next LF is the delimiter's


def test_empty_part_between_two_delimiters_stays_in_its_multipart() -> None:
    """``--inner`` right before ``--outer``: the empty inner part lies within its multipart."""
    data = (
        b"Content-Type: multipart/mixed; boundary=outer\n\n--outer\n"
        b"Content-Type: multipart/alternative; boundary=inner\n\n--inner\n--outer\n\nx\n--outer--\n"
    )
    root = parse_message(io.BytesIO(data))
    check_tree(root, data)
    alternative = root.children[0]
    assert [c.end - c.header_start for c in alternative.children] == [0]
