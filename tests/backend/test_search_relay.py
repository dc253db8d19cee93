"""SEARCH criteria passed on to the backend: literals kept whole, sequence numbers noticed."""

from __future__ import annotations

import pytest

from transcoder.backend.connection import Literal
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
