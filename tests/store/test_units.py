"""Building blocks of the store: uid list format, canonical copies, dates, flags, keyword table."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.errors import BadCommand
from transcoder.store.flags import (
    InvalidFlag,
    KeywordLimitError,
    Keywords,
    apply_mode,
    parse_flags,
    split_filename,
)
from transcoder.store.intake import canonical_copy, is_canonical, parse_date
from transcoder.store.uidlist import (
    CorruptUidListError,
    UidList,
    allocate_uidvalidity,
    parse_uidlist,
    read_uidlist,
    salvage_validity,
)


def test_uidlist_round_trips() -> None:
    """A rendered uid list parses back to the same value."""
    value = UidList(1700000000, 7, 5, 3, ((1, "100.a.host"), (6, "200.b.host")))
    assert parse_uidlist(value.render().decode()) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage\n",
        "transcoder-uidlist 1 V0 N1 R0 G1\n",
        "transcoder-uidlist 1 V5 N3 R0 G1\n2 a\n1 b\n",
        "transcoder-uidlist 1 V5 N3 R0 G1\n3 a\n",
        "transcoder-uidlist 1 V5 N3 R0 G1\n1 a",
        "transcoder-uidlist 1 V5 N3 R0 G1\nx a\n",
    ],
)
def test_corrupt_uidlists_are_detected(text: str) -> None:
    """Bad headers, out-of-order or out-of-range UIDs and truncation raise CorruptUidListError."""
    with pytest.raises(CorruptUidListError):
        parse_uidlist(text)


def test_salvage_validity_reads_damaged_header(tmp_path: Path) -> None:
    """The UIDVALIDITY of a damaged list is still found, so it is never reused."""
    path = tmp_path / "list"
    path.write_bytes(b"transcoder-uidlist 1 V12345 N\x00\x00")
    with pytest.raises(CorruptUidListError):
        read_uidlist(path)
    assert salvage_validity(path) == 12345


def test_uidvalidity_always_grows(tmp_path: Path) -> None:
    """UIDVALIDITY follows the clock but never repeats, even within one second or going back."""
    first = allocate_uidvalidity(tmp_path, 1000.0)
    second = allocate_uidvalidity(tmp_path, 1000.0)
    third = allocate_uidvalidity(tmp_path, 10.0)
    fourth = allocate_uidvalidity(tmp_path, 10.0, above=5000)
    assert (first, second, third, fourth) == (1000, 1001, 1002, 5001)


def canon(data: bytes, chunk: int) -> bytes:
    out = io.BytesIO()
    size = canonical_copy(io.BytesIO(data), out, chunk=chunk)
    assert size == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 65536])
def test_canonical_copy(chunk: int) -> None:
    """Bare LF becomes CRLF, CRLF stays, bare CR stays, across any chunk boundary."""
    assert canon(b"a\nb\r\nc\rd\r\r\n\n", chunk) == b"a\r\nb\r\nc\rd\r\r\n\r\n"
    assert canon(b"no newline at end", chunk) == b"no newline at end"
    assert canon(b"ends with cr\r", chunk) == b"ends with cr\r"


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=17))
def test_canonical_copy_properties(data: bytes, chunk: int) -> None:
    """The result has no bare LF, is idempotent, and only differs by inserted CRs."""
    out = canon(data, chunk)
    assert out.count(b"\n") == out.count(b"\r\n")
    assert canon(out, chunk) == out
    assert out.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")


def test_is_canonical(tmp_path: Path) -> None:
    """is_canonical spots a bare LF, including one right after a chunk boundary."""
    path = tmp_path / "m"
    path.write_bytes(b"a\r\nb\r\n")
    assert is_canonical(path, chunk=3)
    path.write_bytes(b"ab\r\nc\n")
    assert not is_canonical(path, chunk=3)
    path.write_bytes(b"ab\r\nc\r\r\n")
    assert is_canonical(path, chunk=2)


def test_parse_date_forms() -> None:
    """APPEND dates: RFC 3501 date-time (space-padded day too), RFC 2822, datetime, None."""
    expected = datetime(2008, 2, 22, 17, 6, 23, tzinfo=timezone(timedelta(hours=1)))
    assert parse_date(b"22-Feb-2008 17:06:23 +0100") == expected
    assert parse_date(" 2-Feb-2008 17:06:23 +0100") == expected - timedelta(days=20)
    assert parse_date("Fri, 22 Feb 2008 17:06:23 +0100") == expected
    assert parse_date(datetime(2008, 2, 22)) == datetime(2008, 2, 22, tzinfo=UTC)
    assert parse_date(None) is None


@pytest.mark.parametrize("bad", [b"31-Feb-2008 00:00:00 +0000", b"yesterday", b"22-Foo-2008 1:2:3"])
def test_parse_date_refuses_nonsense(bad: bytes) -> None:
    """An impossible or malformed date is a BadCommand, not a crash."""
    with pytest.raises(BadCommand):
        parse_date(bad)


def test_parse_flags() -> None:
    """System flags get canonical case, \\Recent is dropped, keywords kept, duplicates merged."""
    assert parse_flags([b"\\SEEN", "\\recent", "$Label1", "\\Deleted", "$label1"]) == (
        "\\Seen",
        "$Label1",
        "\\Deleted",
    )


@pytest.mark.parametrize("bad", ["\\Unknown", "a b", "(x)", "", 'q"', "ü"])
def test_parse_flags_refuses_invalid(bad: str) -> None:
    """Unknown system flags and non-atom keywords are refused (RFC 3501 section 9, flag)."""
    with pytest.raises(InvalidFlag):
        parse_flags([bad])


def test_apply_mode() -> None:
    """+FLAGS adds, -FLAGS removes (keywords case-insensitively), FLAGS replaces."""
    current = ("\\Seen", "Work")
    assert apply_mode(current, ("\\Flagged",), 1) == ("\\Seen", "Work", "\\Flagged")
    assert apply_mode(current, ("work",), -1) == ("\\Seen",)
    assert apply_mode(current, ("\\Draft",), 0) == ("\\Draft",)


def test_split_filename() -> None:
    """Base name and info letters are split at ':2,'."""
    assert split_filename("123.abc.host:2,FS") == ("123.abc.host", "FS")
    assert split_filename("123.abc.host") == ("123.abc.host", "")


def test_keywords_table(tmp_path: Path) -> None:
    """Keywords get letters a..z in a dovecot-keywords file; the 27th is refused."""
    table = Keywords(tmp_path / "dovecot-keywords")
    table.register(["Work", "$Forwarded"])
    assert (tmp_path / "dovecot-keywords").read_text() == "0 Work\n1 $Forwarded\n"
    assert table.info(["\\Seen", "$Forwarded", "\\Answered"], keep="P") == "PRSb"
    assert table.flags("PRSab") == ("\\Answered", "\\Seen", "Work", "$Forwarded")
    table.register([f"k{i}" for i in range(24)])
    assert not table.has_room()
    with pytest.raises(KeywordLimitError):
        table.register(["one-too-many"])
    reread = Keywords(tmp_path / "dovecot-keywords")
    reread.load()
    assert reread.names()[:2] == ["Work", "$Forwarded"]


def test_keyword_letters_follow_the_table_when_it_changes(tmp_path: Path) -> None:
    """The flags of an info string are remembered, but never past a change of the table:
    another program rewriting dovecot-keywords, or a keyword registered here."""
    path = tmp_path / "dovecot-keywords"
    path.write_text("0 Work\n")
    table = Keywords(path)
    table.load()
    assert table.flags("Sa") == ("\\Seen", "Work")
    assert table.flags("Sa") == ("\\Seen", "Work")  # remembered
    path.write_text("0 Home\n1 Later\n")
    table.load()
    assert table.flags("Sa") == ("\\Seen", "Home")
    path.unlink()
    table.load()
    assert table.flags("Sa") == ("\\Seen",)
    table.register(["Todo"])
    assert table.flags("Sa") == ("\\Seen", "Todo")
