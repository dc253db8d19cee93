"""LIST/LSUB patterns: no pattern stalls the server, every pattern answers (issue 8 item 1).

A pattern used to become a backtracking regular expression run on the
reactor thread: ``%%%%%%Z`` against one 200-character mailbox name did not
finish in minutes while every other client waited.  These tests pin the
linear-time matcher (against an independent reference), the caps with their
tagged ``BAD [LIMIT]``, and that patterns holding atom-specials or ``&``
starting no modified UTF-7 shift answer ``OK`` (issue 10 item 3).
"""

from __future__ import annotations

import functools
import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.imap.harness import Session, make_session
from transcoder.errors import PatternTooComplex
from transcoder.imap.mailbox_syntax import encode_mailbox_name
from transcoder.store.names import decode_list_pattern, match_names
from transcoder.store.patterns import MAX_PATTERN_LENGTH, MAX_WILDCARDS, ListPattern, collapse

LONG = "a" * 200
#: A hierarchy like the issue's: ordinary names, one of 200 characters.
HIERARCHY = [
    "INBOX",
    "INBOX/Z",
    "Archive",
    "Lists",
    "Lists/twisted",
    "Lists/Z",
    "Zed",
    "aZ",
    "a/b/Z",
    LONG,
    LONG[:-1] + "Z",
]
#: The issue's patterns; each is a blow-up for a backtracking regex on LONG.
ISSUE_PATTERNS = [
    ("%" * 12 + "Z", ["aZ", LONG[:-1] + "Z"]),
    ("%" * 14 + "Z", ["aZ", LONG[:-1] + "Z"]),
    ("%" * 6 + "Z", ["aZ", LONG[:-1] + "Z"]),
    ("%*" * 16 + "Z", ["INBOX/Z", "Lists/Z", "aZ", "a/b/Z", LONG[:-1] + "Z"]),
    ("%/" * 2 + "%" * 28 + "Z", ["a/b/Z"]),
]


def reference(pattern: str, name: str) -> bool:
    """RFC 3501 section 6.3.8 read literally, by memoised recursion (no collapsing, no regex)."""

    @functools.cache
    def at(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(name)
        if pattern[i] == "*":
            return at(i + 1, j) or (j < len(name) and at(i, j + 1))
        if pattern[i] == "%":
            return at(i + 1, j) or (j < len(name) and name[j] != "/" and at(i, j + 1))
        return j < len(name) and name[j] == pattern[i] and at(i + 1, j + 1)

    return at(0, 0)


# -- the matcher ----------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), ISSUE_PATTERNS)
def test_issue_patterns_select_the_right_names(pattern: str, expected: list[str]) -> None:
    """The issue's patterns against a 200-character name return the right names."""
    assert match_names("", pattern, HIERARCHY) == expected


def test_worst_pattern_is_decided_at_once() -> None:
    """Ten %s against a 34-character name: seconds for the old regex, at once now (< 2 s)."""
    names = ["x" * 34, "x" * 33 + "Z"]
    start = time.perf_counter()
    selected = match_names("", "%" * 10 + "Z", names)
    elapsed = time.perf_counter() - start
    assert selected == ["x" * 33 + "Z"]
    assert elapsed < 2.0, f"{elapsed:.1f} s"


@given(
    pattern=st.text(alphabet="ab/%*", max_size=12),
    name=st.text(alphabet="ab/", max_size=12),
)
def test_matcher_agrees_with_the_rfc_reference(pattern: str, name: str) -> None:
    """For any pattern and name over a small alphabet, the matcher decides as the reference."""
    assert ListPattern.compile(pattern).matches(name) == reference(pattern, name)


@given(st.text(alphabet="ab/%*", max_size=20))
def test_collapsing_wildcard_runs_keeps_the_meaning(pattern: str) -> None:
    """Collapsed patterns have no adjacent wildcards and select what the original selects."""
    collapsed = collapse(pattern)
    assert not any(a in "%*" and b in "%*" for a, b in itertools.pairwise(collapsed))
    for name in ("", "a", "a/b", "ab/", "/b/a/"):
        assert reference(collapsed, name) == reference(pattern, name)


def test_reference_is_prefixed_and_inbox_is_case_insensitive() -> None:
    """Reference + pattern are one pattern; a leading INBOX level matches in any case."""
    assert match_names("lists/", "%", HIERARCHY) == []
    assert match_names("Lists/", "%", HIERARCHY) == ["Lists/twisted", "Lists/Z"]
    assert match_names("inbox/", "%", HIERARCHY) == ["INBOX/Z"]
    assert match_names("", "iNbOx", HIERARCHY) == ["INBOX"]


def test_caps_raise_limit() -> None:
    """Over MAX_PATTERN_LENGTH characters or MAX_WILDCARDS wildcards is BAD [LIMIT]."""
    at_cap = "%" * MAX_WILDCARDS + "x" * (MAX_PATTERN_LENGTH - MAX_WILDCARDS)
    assert match_names("", at_cap, HIERARCHY) == []
    for reference_, pattern in (("", at_cap + "x"), ("", "%" + at_cap[1:] + "%"), ("*", at_cap)):
        with pytest.raises(PatternTooComplex) as caught:
            match_names(reference_, pattern, HIERARCHY)
        assert (caught.value.response, caught.value.code) == ("BAD", "LIMIT")


# -- decoding patterns off the wire ------------------------------------------------------


@given(st.binary(max_size=40))
def test_any_octets_decode_as_a_pattern(raw: bytes) -> None:
    """Every octet string is a pattern (never refused); plain ASCII stands for itself."""
    text = decode_list_pattern(raw)
    if b"&" not in raw:
        assert text == raw.decode("latin-1")


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20))
def test_valid_modified_utf7_decodes_as_names_do(name: str) -> None:
    """A name's wire form (modified UTF-7) decodes as a pattern to that name."""
    assert decode_list_pattern(encode_mailbox_name(name)) == name


def test_atom_specials_and_stray_ampersand_are_literal() -> None:
    """``&`` starting no valid shift stays ``&``; valid shifts decode (issue 10 item 3)."""
    assert decode_list_pattern(b"!#$&'+,-.%*") == "!#$&'+,-.%*"
    assert decode_list_pattern(b"Entw&APw-rfe/%") == "Entwürfe/%"
    assert decode_list_pattern(b"&-&&AOk-&") == "&&é&"


# -- over the protocol ---------------------------------------------------------------------


@pytest.fixture
def imap(tmp_path: Path) -> Session:
    """A logged-in session whose account holds HIERARCHY, every name subscribed."""
    session = make_session(tmp_path)
    for name in HIERARCHY[1:]:
        for command in (b"CREATE ", b"SUBSCRIBE "):
            _, done = session.command(command + b'"' + name.encode("ascii") + b'"')
            assert b" OK " in done, (name, done)
    return session


def listed(session: Session, line: bytes) -> tuple[list[bytes], bytes]:
    """The names of the untagged LIST/LSUB answers to ``line``, and the tagged answer."""
    lines, done = session.command(line)
    return [ln.rsplit(b" ", 1)[1].strip(b'"') for ln in lines if ln.startswith(b"* L")], done


@pytest.mark.parametrize("command", [b"LIST", b"LSUB"])
@pytest.mark.parametrize(("pattern", "expected"), ISSUE_PATTERNS)
def test_issue_patterns_answer_over_the_protocol(
    imap: Session, command: bytes, pattern: str, expected: list[str]
) -> None:
    """LIST and LSUB with the issue's patterns answer OK with the matching names."""
    names, done = listed(imap, command + b' "" "' + pattern.encode("ascii") + b'"')
    assert done.split(b" ", 2)[1] == b"OK", done
    assert sorted(names) == sorted(name.encode("ascii") for name in expected)


def test_pattern_with_atom_specials_answers_ok(imap: Session) -> None:
    """``LIST "" "!#$&'+,-.%*"`` answers OK and lists the matching name (issue 10 item 3)."""
    _, done = imap.command(b'CREATE "!#$&-\'+,-.box"')
    assert b" OK " in done, done
    names, done = listed(imap, b'LIST "" "!#$&\'+,-.%*"')
    assert b" OK " in done, done
    assert names == [b"!#$&-'+,-.box"]
    names, done = listed(imap, b'LIST "&" "&AOk"')
    assert b" OK " in done and names == [], done


@pytest.mark.parametrize("command", [b"LIST", b"LSUB"])
def test_overlong_pattern_is_bad_limit_and_connection_goes_on(
    imap: Session, command: bytes
) -> None:
    """Too long / too many wildcards: tagged BAD [LIMIT]; the next command works."""
    too_long = b"x" * (MAX_PATTERN_LENGTH + 1)
    too_wild = b"%" * (MAX_WILDCARDS + 1) + b"Z"
    for pattern in (too_long, too_wild):
        tag_and_rest = imap.command(command + b' "" "' + pattern + b'"')
        lines, done = tag_and_rest
        assert done.split(b" ", 3)[1:3] == [b"BAD", b"[LIMIT]"], done
        assert lines == [], lines
        names, done = listed(imap, command + b' "" "%"')
        assert b" OK " in done and b"Zed" in names, done
    _, done = imap.command(b"NOOP")
    assert b" OK " in done, done
