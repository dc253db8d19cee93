"""The SEARCH evaluator over a real Maildir (RFC 3501 section 6.4.4)."""

from __future__ import annotations

import base64
import os
import tracemalloc
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.mail.imap4 import ISearchableMailbox
from zope.interface.verify import verifyObject

from transcoder.store import MailboxSession, MaildirStore
from transcoder.store.search import SearchRun, parse_search_arguments, search


def fired(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class Mailbox:
    """An INBOX on a real Maildir; APPEND runs synchronously."""

    def __init__(self, tmp_path: Path) -> None:
        store = MaildirStore(tmp_path / "mail", clock=Clock(), run_blocking=defer.maybeDeferred)
        self.account = store.account("alice@example.org")

    def add(self, message: bytes, flags: tuple[str, ...] = (), date: str | None = None) -> int:
        """APPEND ``message``; returns its UID."""
        return fired(self.account.append("INBOX", BytesIO(message), flags, date))

    def session(self) -> MailboxSession:
        """A fresh SELECT of INBOX."""
        session = self.account.select("INBOX")
        assert session is not None
        return session

    def search(self, criteria: bytes) -> list[int]:
        """Sequence numbers matching ``criteria`` in a fresh session."""
        return search(self.session(), criteria)


def msg(headers: str, body: str = "hello\r\n") -> bytes:
    """A message from header lines (``\\n`` separated) and a body."""
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode("utf-8")


@pytest.fixture
def box(tmp_path: Path) -> Mailbox:
    return Mailbox(tmp_path)


def test_session_is_searchable(box: Mailbox) -> None:
    """The store's session provides ISearchableMailbox."""
    assert verifyObject(ISearchableMailbox, box.session())


def test_address_and_subject_keys(box: Mailbox) -> None:
    """FROM, TO, CC, BCC and SUBJECT match case-insensitive substrings of their own field only."""
    box.add(msg("From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Lunch"))
    box.add(msg("From: carol@example.com\nCc: Bob <bob@example.net>\nBcc: dave@x.test\nSubject: x"))
    assert box.search(b"FROM ALICE") == [1]
    assert box.search(b"TO bob@") == [1]
    assert box.search(b"CC bob") == [2]
    assert box.search(b"BCC DAVE") == [2]
    assert box.search(b'SUBJECT "lun"') == [1]
    assert box.search(b"FROM bob") == []


def test_header_values_are_rfc2047_decoded(box: Mailbox) -> None:
    """Encoded-words in headers are decoded before matching, also in UTF-8 criteria."""
    box.add(msg("Subject: =?UTF-8?Q?=C3=9Cber_den_Wolken?=\nFrom: =?ISO-8859-1?Q?Ren=E9?= <r@x>"))
    assert box.search(b"CHARSET UTF-8 SUBJECT {5}\r\n\xc3\xbcber") == [1]
    assert box.search(b'CHARSET UTF-8 FROM "ren\xc3\xa9"') == [1]
    assert box.search(b"SUBJECT wolken") == [1]


def test_raw_utf8_header(box: Mailbox) -> None:
    """An 8-bit UTF-8 header (RFC 6532) matches its UTF-8 text."""
    box.add("Subject: Grüße\r\n\r\nx\r\n".encode())
    assert box.search("CHARSET UTF-8 SUBJECT grüße".encode()) == [1]
    assert box.search("CHARSET UTF-8 SUBJECT GRÜSSE".encode()) == [1]  # full case folding
    assert box.search(b"SUBJECT grusse") == []


def test_address_keys_match_addresses_without_comments_and_folding(box: Mailbox) -> None:
    """FROM/TO/CC/BCC match an address written with comments or folded, CFWS removed (RFC 5322)."""
    box.add(msg("From: Name <user-from (comment)@ (comment) domain.org>\nTo: a@example.net"))
    box.add(msg("From: x@example.org\nTo: Team <someone@\n example.com>,\n other (c) @example.com"))
    box.add(msg("From: x@example.org\nCc: c.c @ example.org (Real Name)\nBcc: <b (m)@bcc.example>"))
    assert box.search(b"FROM user-from@domain.org") == [1]
    assert box.search(b'FROM "Name <user-from@domain.org>"') == [1]
    assert box.search(b"TO someone@example.com") == [2]
    assert box.search(b"TO other@EXAMPLE.com") == [2]
    assert box.search(b"CC c.c@example.org") == [3]
    assert box.search(b'CC "Real Name <c.c@example.org>"') == [3]
    assert box.search(b"BCC <b@bcc.example>") == [3]
    assert box.search(b"TO user-from@domain.org") == []  # only the key's own field
    assert box.search(b"FROM someone@example.com") == []


def test_address_keys_still_match_the_written_text(box: Mailbox) -> None:
    """The header text as written (comments, spacing, decoded words) still matches too."""
    box.add(msg("From: =?utf-8?q?J=C3=B6rg?= <j (home)@ example.de>"))
    assert box.search(b'FROM "(home)"') == [1]
    assert box.search(b'FROM "j (home)@ example"') == [1]
    assert box.search(b'CHARSET UTF-8 FROM "J\xc3\xb6rg <j@example.de>"') == [1]
    assert box.search(b"FROM j@example.de") == [1]
    assert box.search(b'HEADER From "j@example.de"') == [1]


def test_address_matching_leaves_other_fields_as_text(box: Mailbox) -> None:
    """Only address fields are parsed: a Subject's comment-like text is matched as written."""
    box.add(msg("Subject: write to a (at) b.example\nFrom: x@example.org"))
    assert box.search(b"SUBJECT a@b.example") == []
    assert box.search(b'SUBJECT "a (at) b"') == [1]


def test_header_key_with_empty_string_matches_presence(box: Mailbox) -> None:
    """HEADER name "" matches every message having the field (RFC 3501 6.4.4)."""
    box.add(msg("Subject: a\nX-Spam: yes"))
    box.add(msg("Subject: b"))
    assert box.search(b'HEADER x-spam ""') == [1]
    assert box.search(b"HEADER X-SPAM YES") == [1]
    assert box.search(b'HEADER X-Other ""') == []


MULTIPART = (
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"preamble mentions zebra\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes("Die Kühe sind auf der Weide.\r\n".encode()).replace(b"\n", b"\r\n")
    + b"--b1\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Gr=FC=DFe aus Z=FCrich\r\n"
    b"--b1\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b"giraffe pixels").replace(b"\n", b"\r\n")
    + b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b"Subject: =?UTF-8?Q?inner_r=C3=A9sum=C3=A9?=\r\n\r\n"
    b"inner body about otters\r\n"
    b"--b1--\r\n"
)


def test_body_searches_decoded_text_parts(box: Mailbox) -> None:
    """BODY finds text in base64 and quoted-printable parts, decoded in their charset."""
    box.add(MULTIPART)
    assert box.search("CHARSET UTF-8 BODY {5}\r\nkühe".encode()) == [1]
    assert box.search('CHARSET UTF-8 BODY "GRÜSSE AUS"'.encode()) == [1]
    assert box.search(b"BODY weide") == [1]


def test_body_includes_encapsulated_message_with_its_header(box: Mailbox) -> None:
    """A message/rfc822 part's header and body are part of the outer body."""
    box.add(MULTIPART)
    assert box.search(b"BODY otters") == [1]
    assert box.search("CHARSET UTF-8 BODY résumé".encode()) == [1]


def test_body_skips_non_text_parts_and_preamble(box: Mailbox) -> None:
    """Image attachments and the multipart preamble are not searched (RFC 3501 6.4.4 MAY)."""
    box.add(MULTIPART)
    assert box.search(b"BODY giraffe") == []
    assert box.search(b"BODY zebra") == []


def test_body_versus_text(box: Mailbox) -> None:
    """BODY ignores the top-level header; TEXT searches header and body."""
    box.add(msg("Subject: pineapple", "mango\r\n"))
    assert box.search(b"BODY pineapple") == []
    assert box.search(b"TEXT pineapple") == [1]
    assert box.search(b"TEXT MANGO") == [1]
    assert box.search(b'TEXT "subject: pine"') == [1]


def test_internal_date_keys(box: Mailbox) -> None:
    """BEFORE, ON and SINCE compare the INTERNALDATE's date, time disregarded."""
    box.add(msg("Subject: a"), date="01-Feb-2021 23:59:59 +0000")
    box.add(msg("Subject: b"), date="02-Feb-2021 00:00:00 +0000")
    assert box.search(b"ON 1-Feb-2021") == [1]
    assert box.search(b"BEFORE 2-Feb-2021") == [1]
    assert box.search(b"SINCE 2-Feb-2021") == [2]
    assert box.search(b"SINCE 1-Feb-2021") == [1, 2]
    assert box.search(b"BEFORE 1-Feb-2021") == []


def test_sent_date_keys_use_the_date_header_in_its_own_zone(box: Mailbox) -> None:
    """SENTON / SENTBEFORE / SENTSINCE use the Date: header's date, zone disregarded."""
    box.add(msg("Date: Mon, 1 Feb 2021 23:30:00 -0800\nSubject: a"))  # 2 Feb in UTC
    box.add(msg("Date: 3 Feb 2021 01:00 +0100\nSubject: b"))
    box.add(msg("Date: not a date\nSubject: c"))
    box.add(msg("Subject: d"))
    assert box.search(b"SENTON 1-Feb-2021") == [1]
    assert box.search(b"SENTBEFORE 3-Feb-2021") == [1]
    assert box.search(b"SENTSINCE 2-Feb-2021") == [2]
    assert box.search(b"NOT SENTSINCE 1-Jan-1970") == [3, 4]


def test_size_keys(box: Mailbox) -> None:
    """LARGER and SMALLER compare RFC822.SIZE strictly."""
    small = msg("Subject: s", "x\r\n")
    box.add(small)
    box.add(msg("Subject: l", "x" * 1000 + "\r\n"))
    size = len(small)
    assert box.search(b"LARGER %d" % size) == [2]
    assert box.search(b"LARGER %d" % (size - 1)) == [1, 2]
    assert box.search(b"SMALLER %d" % size) == []
    assert box.search(b"SMALLER %d" % (size + 1)) == [1]


def test_flag_keys(box: Mailbox) -> None:
    """System flag keys and their UN- forms follow the stored flags."""
    box.add(msg("Subject: 1"), flags=("\\Seen", "\\Answered"))
    box.add(msg("Subject: 2"), flags=("\\Flagged", "\\Deleted", "\\Draft"))
    box.add(msg("Subject: 3"))
    assert box.search(b"SEEN") == [1]
    assert box.search(b"UNSEEN") == [2, 3]
    assert box.search(b"ANSWERED") == [1]
    assert box.search(b"UNANSWERED") == [2, 3]
    assert box.search(b"FLAGGED DELETED DRAFT") == [2]
    assert box.search(b"UNFLAGGED") == [1, 3]
    assert box.search(b"UNDELETED UNDRAFT") == [1, 3]


def test_keyword_keys(box: Mailbox) -> None:
    """KEYWORD / UNKEYWORD match keywords case-insensitively."""
    box.add(msg("Subject: 1"), flags=("$Forwarded",))
    box.add(msg("Subject: 2"))
    assert box.search(b"KEYWORD $forwarded") == [1]
    assert box.search(b"UNKEYWORD $Forwarded") == [2]
    assert box.search(b"KEYWORD $Junk") == []


def test_recent_new_old(box: Mailbox) -> None:
    """RECENT, NEW and OLD follow the session's \\Recent (first session to see a message)."""
    box.add(msg("Subject: 1"), flags=("\\Seen",))
    box.add(msg("Subject: 2"))
    first = box.session()
    assert search(first, b"RECENT") == [1, 2]
    assert search(first, b"NEW") == [2]
    assert search(first, b"OLD") == []
    box.add(msg("Subject: 3"))
    second = box.session()
    assert search(second, b"RECENT") == [3]
    assert search(second, b"OLD") == [1, 2]


def test_sequence_sets(box: Mailbox) -> None:
    """Sequence sets, ranges in either order and ``*`` (the last message) select by number."""
    for i in range(5):
        box.add(msg(f"Subject: {i}"))
    assert box.search(b"2,4:*") == [2, 4, 5]
    assert box.search(b"*:4") == [4, 5]
    assert box.search(b"*") == [5]
    assert box.search(b"7:9") == []
    assert box.search(b"9:*") == [5]


def test_uid_sets(box: Mailbox) -> None:
    """UID sets select by UID; ``*`` is the highest UID even when UIDs have gaps."""
    uids = [box.add(msg(f"Subject: {i}")) for i in range(4)]
    session = box.session()
    session.store(parse_set(b"2"), ["\\Deleted"], 1, False)
    session.expunge()
    session = box.session()
    assert search(session, b"UID %d" % uids[1]) == []
    assert search(session, b"UID %d:*" % uids[2]) == [2, 3]
    assert search(session, b"UID *") == [3]
    assert search(session, b"UID 1,%d" % uids[3]) == [1, 3]


def parse_set(data: bytes) -> Any:
    from twisted.mail.imap4 import parseIdList

    return parseIdList(data)


def test_or_not_nesting(box: Mailbox) -> None:
    """OR and NOT combine keys and parenthesised lists."""
    box.add(msg("Subject: apple"), flags=("\\Seen",))
    box.add(msg("Subject: banana"))
    box.add(msg("Subject: cherry"), flags=("\\Flagged",))
    assert box.search(b"OR SUBJECT apple SUBJECT cherry") == [1, 3]
    assert box.search(b"NOT (OR SEEN FLAGGED)") == [2]
    assert box.search(b"OR (SEEN SUBJECT banana) (NOT SEEN NOT FLAGGED)") == [2]
    assert box.search(b"NOT NOT SUBJECT apple") == [1]
    assert box.search(b"OR 1 OR 2 3 NOT 2") == [1, 3]


def test_cheap_keys_spare_the_files(box: Mailbox) -> None:
    """With ``BODY x SEEN`` on unseen mail no body is read: one step per message, no chunk steps."""
    for i in range(3):
        box.add(msg(f"Subject: {i}", "hay\r\n"))
    run = SearchRun(box.session(), parse_search_arguments(b"BODY needle SEEN"))
    assert len(list(run.steps())) == 3
    run = SearchRun(box.session(), parse_search_arguments(b"BODY needle UNSEEN"))
    assert len(list(run.steps())) == 6  # one chunk step per body read
    assert run.sequence_numbers == []


def test_vanished_message_does_not_match(box: Mailbox, tmp_path: Path) -> None:
    """A message file removed after the search started simply does not match."""
    box.add(msg("Subject: a", "needle\r\n"))
    box.add(msg("Subject: b", "needle\r\n"))
    run = SearchRun(box.session(), parse_search_arguments(b"BODY needle"))
    first = run.messages[0][1]
    os.unlink(first.path())
    list(run.steps())
    assert run.sequence_numbers == [2]


def test_uids_reported_for_uid_search(box: Mailbox) -> None:
    """A run reports the UIDs of its matches alongside their sequence numbers."""
    uids = [box.add(msg(f"Subject: {i}")) for i in range(3)]
    run = SearchRun(box.session(), parse_search_arguments(b"2:3"))
    list(run.steps())
    assert run.uids == uids[1:]


def test_twisted_parsed_query_is_accepted(box: Mailbox) -> None:
    """session.search also takes the nested lists stock Twisted's IMAP4Server passes."""
    box.add(msg("Subject: hello world"))
    box.add(msg("Subject: other"), flags=("\\Seen",))
    session = box.session()
    assert session.search([b"SUBJECT", b"hello world"], uid=False) == [1]
    assert session.search([[b"OR", b"SEEN", b"SUBJECT", b"hello"]], uid=True) == [1, 2]


def test_empty_mailbox(box: Mailbox) -> None:
    """Searching an empty mailbox finds nothing, ``*`` included."""
    assert box.search(b"ALL") == []
    assert box.search(b"UID *") == []


def test_large_attachment_searched_in_constant_memory(box: Mailbox) -> None:
    """An 8 MB base64 text part is searched without holding it: peak memory stays small."""
    chunk = base64.encodebytes(b"lorem ipsum dolor sit amet " * 3000).replace(b"\n", b"\r\n")
    head = (
        b"Subject: big\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    tail = base64.encodebytes(b"the last WORD").replace(b"\n", b"\r\n") + b"--zz--\r\n"
    source = _Concat([head, *[chunk] * 100, tail])
    fired(box.account.append("INBOX", source, (), None))
    session = box.session()
    session.fetch(parse_set(b"1"), False)[0][1].entity()  # parse first: measured is the search
    tracemalloc.start()
    try:
        assert search(session, b"BODY {9}\r\nlast word") == [1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak


class _Concat:
    """A read-only binary stream over several byte strings, without joining them."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = list(parts)

    def read(self, size: int = -1) -> bytes:
        if not self._parts:
            return b""
        if size < 0:
            data, self._parts = b"".join(self._parts), []
            return data
        head = self._parts[0]
        if len(head) <= size:
            return self._parts.pop(0)
        self._parts[0] = head[size:]
        return head[:size]


def test_repeated_searches_reuse_decoded_headers_field_by_field(box: Mailbox) -> None:
    """The decoded texts a header search looks in are kept with the cached message structure,
    per field name: asking again, in another order or another case, answers the same."""
    box.add(msg("From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.org>\nTo: ann (Ann) @ example.net"))
    box.add(msg("From: ann@example.net\nTo: jurgen@example.org"))
    for _ in range(2):
        assert box.search("CHARSET UTF-8 FROM jürgen".encode()) == [1]
        assert box.search(b"TO ann@example.net") == [1]
        assert box.search(b"FROM ann@example.net") == [2]
        assert box.search(b'HEADER "tO" "JURGEN"') == [2]
        assert box.search(b"TO jurgen FROM ann") == [2]
