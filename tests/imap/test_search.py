"""SEARCH and UID SEARCH over the wire (RFC 3501 sections 6.4.4, 6.4.8; issue 2 item 5)."""

from __future__ import annotations

import base64
import os
from datetime import datetime
from io import BytesIO
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tests.imap.harness import Session, make_session
from transcoder.imap.fetch import THREAD_PARSE_LIMIT
from transcoder.imap.search import SEARCH_LITERAL_LIMIT, SYNC_STEPS
from transcoder.imap.settings import ServerSettings

ALICE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Cc: carol@example.com\r\n"
    b"Subject: =?UTF-8?Q?=C3=9Cber_den_Wolken?=\r\n"
    b"Date: Mon, 1 Feb 2021 23:30:00 -0800\r\n"
    b"X-Priority: 1\r\n"
    b"\r\n"
    b"Plain body about clouds.\r\n"
)
DAVE = (
    b"From: dave@example.com\r\n"
    b"To: erin@example.org\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Fri, 5 Mar 2021 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=xyz\r\n"
    b"\r\n"
    b"--xyz\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes("Umsatz gestiegen, Grüße\r\n".encode()).replace(b"\n", b"\r\n")
    + b"--xyz--\r\n"
)
#: Deliveries advance the clock; keep the idle timeout out of the way.
PATIENT = ServerSettings(preauth_timeout=86400.0)
PADDING = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"


def deliver(session: Session, message: bytes, internal_date: str | None = None) -> None:
    """Deliver ``message`` into INBOX as an MDA does; the file's mtime is its INTERNALDATE.

    The clock moves on a second per delivery: Maildir names order arrivals by second.
    """
    session.clock.advance(1)
    name = session.store.deliver(session.server.account.address, BytesIO(message))
    if internal_date is not None:
        stamp = datetime.strptime(internal_date, "%d-%b-%Y %H:%M:%S %z").timestamp()
        path = session.server.account.mailbox_path("INBOX") / "new" / name
        os.utime(path, (stamp, stamp))


def selected(tmp_path: Path, *messages: bytes) -> Session:
    """A session with ``messages`` delivered and INBOX selected."""
    session = make_session(tmp_path, settings=PATIENT)
    for message in messages:
        deliver(session, message)
    lines, done = session.command(b"SELECT INBOX")
    assert b"OK" in done, (lines, done)
    return session


def found(session: Session, criteria: bytes) -> bytes:
    """The untagged SEARCH line answering ``SEARCH criteria`` (which must complete OK)."""
    lines, done = session.command(b"SEARCH " + criteria)
    assert b" OK " in done, (criteria, lines, done)
    [line] = [ln for ln in lines if ln.startswith(b"* SEARCH")]
    return line


def pump(session: Session, tag: bytes, limit: int = 10_000) -> bytes:
    """Advance the clock until the response tagged ``tag`` has been written; all output."""
    out = session.output()
    for _ in range(limit):
        if b"\r\n" + tag + b" " in b"\r\n" + out:
            return out
        session.clock.advance(0)
        out += session.output()
    raise AssertionError(f"no response for {tag!r}: {out!r}")


@pytest.fixture
def imap(tmp_path: Path) -> Session:
    return selected(tmp_path, ALICE, DAVE, PADDING)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"FROM alice", b"* SEARCH 1"),
        (b'FROM "Alice Example"', b"* SEARCH 1"),
        (b"TO BOB", b"* SEARCH 1"),
        (b"TO erin@example.org", b"* SEARCH 2"),
        (b"CC carol", b"* SEARCH 1"),
        (b"SUBJECT quarterly", b"* SEARCH 2"),
        (b"SUBJECT wolken", b"* SEARCH 1"),
        (b'HEADER X-Priority "1"', b"* SEARCH 1"),
        (b'HEADER x-priority ""', b"* SEARCH 1"),
        (b"HEADER Content-Type multipart", b"* SEARCH 2"),
    ],
)
def test_header_keys(imap: Session, criteria: bytes, expected: bytes) -> None:
    """FROM, TO, CC, SUBJECT and HEADER match (on stock Twisted they fail on str vs bytes)."""
    assert found(imap, criteria) == expected


def test_empty_result_has_no_trailing_space(imap: Session) -> None:
    """No match is answered ``* SEARCH`` exactly (RFC 3501 section 7.2.5)."""
    assert found(imap, b"FROM nobody") == b"* SEARCH"


def test_literal_with_utf8_charset(imap: Session) -> None:
    """``SEARCH CHARSET UTF-8 SUBJECT {5}`` gets a continuation, then the literal is searched."""
    imap.send(b"s1 SEARCH CHARSET UTF-8 SUBJECT {5}\r\n")
    assert imap.output().startswith(b"+ ")
    imap.send("über\r\n".encode())
    assert imap.output() == b"* SEARCH 1\r\ns1 OK SEARCH completed\r\n"


def test_literal_followed_by_more_keys_and_another_literal(imap: Session) -> None:
    """After a literal the command line goes on, and may announce another literal."""
    imap.send(b"s1 SEARCH CHARSET UTF-8 OR SUBJECT {5}\r\n")
    assert imap.output().startswith(b"+ ")
    imap.send("über BODY {7}\r\n".encode())
    assert imap.output().startswith(b"+ ")
    imap.send("grüße UNDELETED\r\n".encode())
    assert imap.output() == b"* SEARCH 1 2\r\ns1 OK SEARCH completed\r\n"


def test_oversized_literal_refused_before_reading(imap: Session) -> None:
    """A literal over the search cap gets NO [TOOBIG], not a continuation; the session goes on."""
    imap.send(b"s1 SEARCH SUBJECT {%d}\r\n" % (SEARCH_LITERAL_LIMIT + 1))
    out = imap.output()
    assert out.startswith(b"s1 NO [TOOBIG]"), out
    assert found(imap, b"ALL") == b"* SEARCH 1 2 3"


def test_body_in_base64_part(imap: Session) -> None:
    """BODY finds text inside a base64-encoded text part, decoded as UTF-8."""
    assert found(imap, b"BODY gestiegen") == b"* SEARCH 2"
    assert found(imap, "CHARSET UTF-8 BODY GRÜSSE".encode()) == b"* SEARCH 2"
    assert found(imap, b"BODY clouds") == b"* SEARCH 1"
    assert found(imap, b"TEXT numbers") == b"* SEARCH 2"


def test_not_or_nesting(imap: Session) -> None:
    """NOT and OR nest with parenthesised lists."""
    assert found(imap, b"OR FROM alice FROM dave") == b"* SEARCH 1 2"
    assert found(imap, b"NOT (OR FROM alice FROM dave)") == b"* SEARCH 3"
    assert found(imap, b"OR (FROM alice NOT TO bob) (SUBJECT big)") == b"* SEARCH 3"
    assert found(imap, b"NOT NOT 2") == b"* SEARCH 2"


def test_sequence_sets(imap: Session) -> None:
    """Sequence sets with ranges and ``*`` select by message number."""
    assert found(imap, b"2:*") == b"* SEARCH 2 3"
    assert found(imap, b"*") == b"* SEARCH 3"
    assert found(imap, b"1,3") == b"* SEARCH 1 3"
    assert found(imap, b"3:1 FROM dave") == b"* SEARCH 2"


def test_uid_search_returns_uids(imap: Session) -> None:
    """UID SEARCH answers UIDs; the UID key takes UID sets."""
    imap.command(b"STORE 1 +FLAGS (\\Deleted)")
    imap.command(b"EXPUNGE")
    lines, done = imap.command(b"UID SEARCH ALL")
    assert lines == [b"* SEARCH 2 3"] and b"OK" in done
    lines, _ = imap.command(b"UID SEARCH UID 3:*")
    assert lines == [b"* SEARCH 3"]
    assert found(imap, b"UID 3") == b"* SEARCH 2"


def test_internal_and_sent_dates(tmp_path: Path) -> None:
    """SINCE/BEFORE/ON use INTERNALDATE; SENT* the Date: header's date, zone disregarded."""
    session = make_session(tmp_path, settings=PATIENT)
    deliver(session, ALICE, "01-Feb-2021 23:59:59 +0000")
    deliver(session, DAVE, "10-Mar-2021 08:00:00 +0000")
    session.command(b"SELECT INBOX")
    assert found(session, b"ON 1-Feb-2021") == b"* SEARCH 1"
    assert found(session, b"SINCE 2-Feb-2021") == b"* SEARCH 2"
    assert found(session, b'BEFORE "10-Mar-2021"') == b"* SEARCH 1"
    assert found(session, b"SENTON 1-Feb-2021") == b"* SEARCH 1"
    assert found(session, b"SENTSINCE 2-Feb-2021") == b"* SEARCH 2"
    assert found(session, b"SENTBEFORE 5-Mar-2021") == b"* SEARCH 1"


def test_larger_smaller(imap: Session) -> None:
    """LARGER and SMALLER compare RFC822.SIZE."""
    assert found(imap, b"LARGER 4000") == b"* SEARCH 3"
    assert found(imap, b"SMALLER 4000") == b"* SEARCH 1 2"


def test_flags_and_keywords(imap: Session) -> None:
    """Flag keys and KEYWORD/UNKEYWORD follow STORE."""
    imap.command(b"STORE 1 +FLAGS (\\Seen $Forwarded)")
    imap.command(b"STORE 2 +FLAGS (\\Flagged)")
    assert found(imap, b"SEEN") == b"* SEARCH 1"
    assert found(imap, b"UNSEEN") == b"* SEARCH 2 3"
    assert found(imap, b"KEYWORD $forwarded") == b"* SEARCH 1"
    assert found(imap, b"UNKEYWORD $Forwarded FLAGGED") == b"* SEARCH 2"
    assert found(imap, b"NEW") == b"* SEARCH 2 3"
    assert found(imap, b"OLD") == b"* SEARCH"


@pytest.mark.parametrize(
    "criteria",
    [b"", b"FOO", b"(SEEN", b"SUBJECT", b"BEFORE 30-Feb-2021", b"0:1", b'SUBJECT "x {3}'],
)
def test_syntax_errors_are_bad_clientbug(imap: Session, criteria: bytes) -> None:
    """Invalid criteria get a tagged BAD [CLIENTBUG], no continuation, and the session goes on."""
    lines, done = imap.command(b"SEARCH " + criteria if criteria else b"SEARCH")
    assert lines == [] and done.startswith(b"t") and b" BAD [CLIENTBUG] " in done, done
    assert found(imap, b"ALL") == b"* SEARCH 1 2 3"


def test_unsupported_charset_is_no_badcharset(imap: Session) -> None:
    """An unsupported CHARSET gets NO [BADCHARSET (US-ASCII UTF-8)] (RFC 3501 6.4.4, not BAD)."""
    _, done = imap.command(b"SEARCH CHARSET ISO-2022-JP SUBJECT x")
    assert b" NO [BADCHARSET (US-ASCII UTF-8)] " in done


def test_search_needs_a_selected_mailbox(tmp_path: Path) -> None:
    """SEARCH in the authenticated state is refused with BAD."""
    session = make_session(tmp_path)
    _, done = session.command(b"SEARCH ALL")
    assert b" BAD " in done


def test_long_search_yields_to_the_reactor_and_holds_pipelined_commands(tmp_path: Path) -> None:
    """A search over more than SYNC_STEPS messages ends over clock turns; a pipelined NOOP waits."""
    session = selected(tmp_path, *[ALICE] * (SYNC_STEPS + 20))
    session.send(b"s1 SEARCH FROM alice\r\ns2 NOOP\r\n")
    assert session.output() == b""  # nothing yet: the rest runs at the next turns
    out = pump(session, b"s2")
    search_line = b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, SYNC_STEPS + 21))
    assert out.index(search_line) < out.index(b"s1 OK") < out.index(b"s2 OK")


def test_connection_lost_during_search(tmp_path: Path) -> None:
    """A client that disconnects mid-search stops it; nothing more is written, nothing fails."""
    session = selected(tmp_path, *[ALICE] * (SYNC_STEPS + 20))
    session.send(b"s1 SEARCH BODY clouds\r\n")
    session.server.connectionLost(Failure(ConnectionDone()))
    for _ in range(100):
        session.clock.advance(0)
    assert session.output() == b""
    assert session.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_large_message_parsed_in_a_thread(tmp_path: Path) -> None:
    """A message above THREAD_PARSE_LIMIT has its MIME tree parsed off the reactor thread."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    big = (
        b"Subject: big\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        + b"filler line\r\n" * (THREAD_PARSE_LIMIT // 12)
        + b"needle\r\n--q--\r\n"
    )
    session = selected(tmp_path, big, ALICE)
    session.send(b"s1 SEARCH BODY needle\r\n")
    assert session.output() == b""  # waiting for the worker thread
    out = b""
    for _ in range(500):
        await deferLater(reactor, 0.01, lambda: None)
        session.clock.advance(0)
        out += session.output()
        if b"s1 " in out:
            break
    assert out == b"* SEARCH 1\r\ns1 OK SEARCH completed\r\n"


def test_non_synchronizing_literal(imap: Session) -> None:
    """A LITERAL+ literal (RFC 7888) in the criteria is read without a continuation request."""
    imap.send("s1 SEARCH CHARSET UTF-8 SUBJECT {5+}\r\nüber FROM {5+}\r\nalice\r\n".encode())
    assert imap.output() == b"* SEARCH 1\r\ns1 OK SEARCH completed\r\n"


def test_oversized_non_synchronizing_literal_is_skipped(imap: Session) -> None:
    """An oversized LITERAL+ literal is refused and its octets discarded, never run as commands."""
    octets = b"x1 LOGOUT\r\n" * (SEARCH_LITERAL_LIMIT // 11 + 1)
    imap.send(b"s1 SEARCH SUBJECT {%d+}\r\n" % len(octets) + octets + b"\r\n")
    out = imap.output()
    assert out.startswith(b"s1 NO [TOOBIG]") and b"BYE" not in out, out[:200]
    assert found(imap, b"ALL") == b"* SEARCH 1 2 3"
