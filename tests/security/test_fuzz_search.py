"""Fuzzing SEARCH: hostile criteria get BAD or NO with a reason, never an internal error.

The parser (:mod:`transcoder.store.search_syntax`) is fed grammar-aware
criteria -- every key, nested NOT/OR/parentheses, literals, huge numbers,
broken quoting (:mod:`tests.security.search_grammar`) -- and raw octets: it
returns a query or raises one of our client errors, nothing else.  The same
criteria then run through the server against real messages: each SEARCH
gets one tagged answer, a successful one a single ``* SEARCH`` line naming
messages that exist.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.security.fuzzing import scaled, scratch, watching_log
from tests.security.imap_grammar import FuzzCommand, frame
from tests.security.protocol_fuzz import FUZZ_BIG, answer_problems, open_client, responses
from tests.security.search_grammar import search_criteria
from tests.security.tokens import Part, Tokens
from transcoder.errors import ClientError
from transcoder.store.search_query import Larger
from transcoder.store.search_syntax import (
    SearchSyntaxError,
    parse_search,
    parse_search_arguments,
    pending_literal,
    tokenize,
)

#: Numbers longer than int() converts (CPython refuses over 4,300 digits).
LONG_DIGITS = b"9" * 5000


def wire(parts: list[Part]) -> bytes:
    """SEARCH arguments as the parser receives them: literals inline, in wire form."""
    segments = frame(b"", parts, end=b"")
    data = b"".join(s for s in segments if s is not None)
    return data[:-2] if segments[-1] is None else data  # a literal still to come ends the line


def parse_or_refuse(data: bytes) -> None:
    """Run every entry point of the parser on ``data``; only client errors may escape."""
    with contextlib.suppress(ClientError):
        pending_literal(data)
    with contextlib.suppress(ClientError):
        tokenize(data)
    with contextlib.suppress(ClientError):
        parse_search(data, "UTF-8")
    with contextlib.suppress(ClientError):
        parse_search_arguments(data)


@scaled(200)
@given(rng=st.randoms(use_true_random=False))
def test_grammar_fuzzed_criteria_parse_or_raise_client_errors(rng: random.Random) -> None:
    """Criteria built from the SEARCH grammar and mutated: a query or a ClientError."""
    parse_or_refuse(wire(Tokens(rng, big=2_000).mutate(search_criteria(Tokens(rng, big=2_000)))))


@scaled(300)
@given(data=st.binary(max_size=200))
def test_random_octets_parse_or_raise_client_errors(data: bytes) -> None:
    """Arbitrary octets: a query or a ClientError."""
    parse_or_refuse(data)


@pytest.mark.parametrize(
    "criteria",
    [
        LONG_DIGITS,
        b"UID 1:" + LONG_DIGITS,
        b"1," + LONG_DIGITS + b":*",
        b"LARGER " + LONG_DIGITS,
        b"SMALLER 0000000000000000000000" + LONG_DIGITS,
    ],
)
def test_numbers_too_long_for_int_are_syntax_errors(criteria: bytes) -> None:
    """A number of thousands of digits is a SearchSyntaxError, not int()'s ValueError."""
    with pytest.raises(SearchSyntaxError):
        parse_search_arguments(criteria)


def test_leading_zeros_do_not_make_a_number_too_long() -> None:
    """``LARGER 000...0005`` is 5: only significant digits count against the limit."""
    assert parse_search_arguments(b"LARGER " + b"0" * 5000 + b"5").key == Larger(5)


def test_long_input_is_not_echoed_whole() -> None:
    """The BAD for a 100,000-octet unknown key quotes a short prefix, not the whole key."""
    with pytest.raises(SearchSyntaxError) as refused:
        parse_search_arguments(b"X" * 100_000)
    assert len(str(refused.value)) < 100


def test_search_with_huge_sequence_number_answered_bad() -> None:
    """Over the wire, ``SEARCH 999...9`` (5,000 digits) gets BAD, not NO [SERVERBUG]."""
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, "select", with_keys=False)
        for criteria in (LONG_DIGITS, b"UID 1:" + LONG_DIGITS, b"LARGER " + LONG_DIGITS):
            line = b"s SEARCH " + criteria + b"\r\n"
            outcome = client.run(FuzzCommand(b"s", b"SEARCH", (line,)))
            assert outcome.tagged()[0].startswith(b"s BAD [CLIENTBUG] "), outcome.output[:200]
    assert not log.problems()


def search_command(rng: random.Random, index: int) -> FuzzCommand:
    """A SEARCH or UID SEARCH with fuzzed criteria, tagged ``s<index>``."""
    tokens = Tokens(rng, big=FUZZ_BIG)
    tag = b"s%d" % index
    head = tag + (b" UID SEARCH" if rng.random() < 0.3 else b" SEARCH")
    return FuzzCommand(tag, b"SEARCH", frame(head, tokens.mutate(search_criteria(tokens))))


@scaled(25)
@given(rng=st.randoms(use_true_random=False), count=st.integers(1, 12))
def test_fuzzed_searches_over_the_wire_answered_cleanly(rng: random.Random, count: int) -> None:
    """Fuzzed SEARCH commands on real messages: one tagged answer, valid results, no SERVERBUG."""
    with scratch() as directory, watching_log() as log:
        client = open_client(directory, "select", with_keys=False)
        for index in range(count):
            outcome = client.run(search_command(rng, index))
            problems = answer_problems(outcome)
            assert not problems, (problems, outcome.command.wire[:300], outcome.output[:300])
            found = [r for r in responses(outcome.output) if r.startswith(b"* SEARCH")]
            if outcome.tagged()[0].split(b" ")[1] == b"OK":
                assert len(found) == 1, outcome.output
                numbers = [int(n) for n in found[0].split()[2:]]
                assert all(1 <= n <= 3 for n in numbers), found  # three messages, UIDs 1-3
        assert client.noop_works()
    assert not log.problems(), log.problems()
