"""Mailbox names: validation, the Maildir++ directory mapping and LIST patterns (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.errors import InvalidMailboxName
from transcoder.store.names import (
    decode_mutf7,
    dirname,
    encode_mutf7,
    match_names,
    name_of_dir,
    normalize,
    split_name,
)

NAMES = ["INBOX", "INBOX/sub", "a", "ab", "a/b", "a/b/c", "a/bc", "b", "foo", "foo/bar"]


def test_mutf7_matches_rfc3501_example() -> None:
    """Modified UTF-7 encodes as in RFC 3501 section 5.1.3's example."""
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_mutf7("a&b") == "a&-b"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_mutf7_round_trips(text: str) -> None:
    """Any Unicode text survives encode/decode, with or without extra escaped characters."""
    assert decode_mutf7(encode_mutf7(text)) == text
    assert decode_mutf7(encode_mutf7(text, escape=".")) == text


@pytest.mark.parametrize(
    ("name", "directory"),
    [
        ("INBOX", ""),
        ("Sent", ".Sent"),
        ("Lists/twisted", ".Lists.twisted"),
        ("a.b", ".a&AC4-b"),
        ("Entwürfe", ".Entw&APw-rfe"),
        ("!#$&'+,-.", ".!#$&-'+,-&AC4-"),
        ("INBOX/Old", ".INBOX.Old"),
    ],
)
def test_directory_mapping(name: str, directory: str) -> None:
    """Each level is stored modified-UTF-7 with '.' escaped, so '.' and '/' never collide."""
    assert dirname(split_name(name)) == directory
    assert (name_of_dir(directory) if directory else "INBOX") == name


def test_dot_in_name_differs_from_hierarchy() -> None:
    """'a.b' (one level) and 'a/b' (two levels) get different directories."""
    assert dirname(split_name("a.b")) != dirname(split_name("a/b"))


def test_inbox_is_case_insensitive() -> None:
    """'inbox' and 'Inbox/x' name INBOX and its child (RFC 3501 section 5.1)."""
    assert normalize("inbox") == "INBOX"
    assert normalize("Inbox/x") == "INBOX/x"
    assert normalize("xinbox") == "xinbox"


@pytest.mark.parametrize(
    "bad",
    ["", "/", "a//b", "/a", "a/", "a/./b", "..", "a\x00b", "a\nb", "a\x7fb", "a*b", "a%b",
     "\ud800", "x" * 300],
)  # fmt: skip
def test_invalid_names_are_refused(bad: str) -> None:
    """Empty or dot levels, control chars, wildcards, surrogates, excess length are refused."""
    with pytest.raises(InvalidMailboxName):
        split_name(bad)


@pytest.mark.parametrize(
    "entry", [".", "..", ".a..b", ".a.b&", ".&AGE-", ".inbox", ".a b\x01", "cur"]
)
def test_foreign_directories_are_not_mailboxes(entry: str) -> None:
    """Directory names that do not map back to themselves are ignored."""
    assert name_of_dir(entry) is None


@pytest.mark.parametrize(
    ("ref", "pattern", "expected"),
    [
        ("", "*", NAMES),
        ("", "%", ["INBOX", "a", "ab", "b", "foo"]),
        ("", "a", ["a"]),
        ("", "a%", ["a", "ab"]),
        ("", "a/%", ["a/b", "a/bc"]),
        ("", "a/*", ["a/b", "a/b/c", "a/bc"]),
        ("", "foo/%", ["foo/bar"]),
        ("a/", "%", ["a/b", "a/bc"]),
        ("", "%/%", ["INBOX/sub", "a/b", "a/bc", "foo/bar"]),
        ("", "*c", ["a/b/c", "a/bc"]),
        ("", "inbox", ["INBOX"]),
        ("", "InBoX/%", ["INBOX/sub"]),
        ("", "nomatch", []),
    ],
)
def test_list_patterns(ref: str, pattern: str, expected: list[str]) -> None:
    """'*' matches anything, '%' stops at '/', anchored at both ends (RFC 3501 6.3.8)."""
    assert match_names(ref, pattern, NAMES) == expected


def test_pattern_characters_are_literal() -> None:
    """Regex metacharacters in names and patterns match only themselves."""
    assert match_names("", "a.c", ["a.c", "abc"]) == ["a.c"]
    assert match_names("", "(x)+", ["(x)+", "xx"]) == ["(x)+"]
