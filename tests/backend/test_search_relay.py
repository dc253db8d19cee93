"""SEARCH criteria passed on to the backend: literals kept whole, sequence numbers noticed."""

from __future__ import annotations

import pytest

from transcoder.backend.connection import Literal
from transcoder.backend.search_map import criteria_by_uid, sequence_uids
from transcoder.backend.server import search_pieces, uses_sequence_numbers
from transcoder.store.search_syntax import parse_search_arguments


def test_literals_are_split_out_whole() -> None:
    """A literal's octets (even ones that look like a literal) go on as one Literal."""
    criteria = b'CHARSET UTF-8 SUBJECT {7}\r\n{3}\r\nab BODY "x{1}" TEXT {2+}\r\nzz'
    assert search_pieces(criteria) == [
        b"CHARSET UTF-8 SUBJECT",
        Literal(b"{3}\r\nab"),
        b'BODY "x{1}" TEXT',
        Literal(b"zz"),
    ]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"DELETED", False),
        (b"UID 1:*", False),
        (b"OR SUBJECT a FROM b", False),
        (b"1:3", True),
        (b"NOT 2", True),
        (b"OR SUBJECT x 4,7", True),
        (b"(SEEN (UNSEEN 5))", True),
    ],
)
def test_sequence_numbers_are_found_anywhere_in_the_criteria(
    criteria: bytes, expected: bool
) -> None:
    """Whether the client's sequence numbers matter to the answer (see BackendMailbox)."""
    assert uses_sequence_numbers(parse_search_arguments(criteria).key) is expected


#: A client's snapshot: sequence numbers 1-5 name these UIDs.
SNAPSHOT = [3, 4, 8, 9, 20]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"2", [b"UID 4"]),
        (b"2:*", [b"UID 4,8:9,20"]),
        (b"*:4", [b"UID 9,20"]),
        (b"1,3:4,9", [b"UID 3,8:9"]),
        (b"7:9", [b"NOT ALL"]),
        (b"NOT 5", [b"NOT", b"UID 20"]),
        (b"OR 1 (SEEN 2)", [b"OR", b"UID 3", b"(", b"SEEN", b"UID 4", b")"]),
        (b"UID 8:*", [b"UID", b"8:20"]),
        (b"HEADER X-A 1 LARGER 2 1", [b"HEADER", b"X-A", b"1", b"LARGER", b"2", b"UID 3"]),
        (b"CHARSET UTF-8 3", [b"CHARSET", b"UTF-8", b"UID 8"]),
        (b'SUBJECT "a \\"b\\\\" 1', [b"SUBJECT", b'"a \\"b\\\\"', b"UID 3"]),
        (b"BODY {5}\r\n2\r\n\xc3\xa9 4", [b"BODY", Literal(b"2\r\n\xc3\xa9"), b"UID 9"]),
        (b"SINCE 1-Feb-2020 KEYWORD $x 2", [b"SINCE", b"1-Feb-2020", b"KEYWORD", b"$x", b"UID 4"]),
    ],
)
def test_sequence_numbers_become_the_snapshots_uids(
    criteria: bytes, expected: list[bytes | Literal]
) -> None:
    """RFC 3501 7.4.1: the client's numbers are its snapshot's; strings are never numbers."""
    parse_search_arguments(criteria)  # the server validates first
    assert criteria_by_uid(criteria, SNAPSHOT) == expected


def test_sequence_set_resolution() -> None:
    """``*`` is the snapshot's last message; numbers past it name nothing."""
    assert sequence_uids(b"*", SNAPSHOT) == [20]
    assert sequence_uids(b"5:2,1", SNAPSHOT) == [3, 4, 8, 9, 20]
    assert sequence_uids(b"6:7", SNAPSHOT) == []
    assert sequence_uids(b"1:*", []) == []
