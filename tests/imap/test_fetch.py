"""FETCH at the protocol level: partials, \\Seen, BODYSTRUCTURE sizes, the view seam."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.imap.harness import selected_session as selected
from transcoder.errors import ClientError
from transcoder.imap.fetch import as_parsed_message
from transcoder.imap.server import TranscodingIMAP4Server

SINGLE = (
    b"From: a@example.org\r\nSubject: one part\r\n"
    b'Content-Type: text/plain; charset="UTF-8"; Format=Flowed\r\n\r\n'
    b"line one\r\nline two\r\nline three\r\n"
)
MULTI = (
    b'Subject: two parts\r\nContent-Type: multipart/alternative; boundary="AbC=_x"\r\n\r\n'
    b"--AbC=_x\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
    b"--AbC=_x\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--AbC=_x--\r\n"
)


def literal_after(out: bytes, label: bytes) -> bytes:
    """The octets of the literal following ``label {n}`` in server output."""
    match = re.search(re.escape(label) + rb" \{(\d+)\}\r\n", out)
    assert match, (label, out)
    start = match.end()
    return out[start : start + int(match.group(1))]


def test_partial_fetch_returns_exact_slice(tmp_path: Path) -> None:
    """BODY.PEEK[]<o.n> returns octets o..o+n, labelled BODY[]<o> (Twisted sends the whole body)."""
    session = selected(tmp_path, SINGLE)
    session.send(b"a FETCH 1 (BODY.PEEK[]<5.10>)\r\n")
    out = session.output()
    assert literal_after(out, b"BODY[]<5>") == SINGLE[5:15]
    assert b"a OK" in out


def test_partial_fetch_of_section_and_past_end(tmp_path: Path) -> None:
    """Partials apply within a section, and an origin past the end yields an empty literal."""
    session = selected(tmp_path, MULTI)
    session.send(b"a FETCH 1 (BODY.PEEK[2]<3.4> BODY.PEEK[1]<100.5>)\r\n")
    out = session.output()
    assert literal_after(out, b"BODY[2]<3>") == b"<p>html</p>"[3:7]
    assert literal_after(out, b"BODY[1]<100>") == b""


def test_non_peek_fetch_sets_seen_and_reports_flags(tmp_path: Path) -> None:
    """BODY[TEXT] sets \\Seen and the FETCH response carries the new FLAGS; PEEK does not."""
    session = selected(tmp_path, SINGLE)
    session.send(b"a FETCH 1 (BODY.PEEK[TEXT])\r\n")
    assert b"Seen" not in session.output()
    session.send(b"b FETCH 1 (BODY[TEXT])\r\n")
    out = session.output()
    assert re.search(rb"FLAGS \([^)]*\\Seen", out), out
    session.send(b"c FETCH 1 (FLAGS)\r\n")
    assert b"\\Seen" in session.output()


def test_bodystructure_single_part_size_and_param_case(tmp_path: Path) -> None:
    """A single-part BODYSTRUCTURE carries the body's size and keeps parameter value case."""
    session = selected(tmp_path, SINGLE, MULTI)
    session.send(b"a FETCH 1:2 (BODYSTRUCTURE)\r\n")
    out = session.output()
    body_size = len(SINGLE) - SINGLE.index(b"\r\n\r\n") - 4
    assert re.search(rb'"TEXT" "PLAIN" \([^)]*"Flowed"\) NIL NIL "7BIT" %d 3' % body_size, out), out
    assert b'"boundary" "AbC=_x"' in out


def test_rfc822_items_and_size(tmp_path: Path) -> None:
    """RFC822, RFC822.HEADER, RFC822.TEXT and RFC822.SIZE describe the same octets."""
    session = selected(tmp_path, SINGLE)
    session.send(b"a FETCH 1 (RFC822.SIZE RFC822.HEADER RFC822.TEXT)\r\n")
    out = session.output()
    split = SINGLE.index(b"\r\n\r\n") + 4
    assert b"RFC822.SIZE %d" % len(SINGLE) in out
    assert literal_after(out, b"RFC822.HEADER") == SINGLE[:split]
    assert literal_after(out, b"RFC822.TEXT") == SINGLE[split:]


def test_uid_fetch_includes_uid(tmp_path: Path) -> None:
    """UID FETCH answers with the UID item even when not asked (RFC 3501 6.4.8)."""
    session = selected(tmp_path, SINGLE)
    session.send(b"a UID FETCH 1:* (FLAGS)\r\n")
    out = session.output()
    assert re.search(rb"\* 1 FETCH \(UID \d+ FLAGS", out), out


def test_large_message_streams_exactly(tmp_path: Path) -> None:
    """A 3 MB message is streamed through the producer path byte for byte."""
    body = b"".join(b"%07d abcdefghijklmnopqrstuvwxyz\r\n" % i for i in range(90_000))
    message = b"Subject: big\r\n\r\n" + body
    session = selected(tmp_path, message)
    session.send(b"a FETCH 1 (BODY.PEEK[])\r\n")
    out = b""
    for _ in range(1000):
        chunk = session.output()
        if session.transport.producer is not None:
            session.transport.producer.resumeProducing()
        out += chunk
        if b"a OK" in out:
            break
    assert literal_after(out, b"BODY[]") == message


class RefusingServer(TranscodingIMAP4Server):
    """A server whose view refuses every message, as a transcoder that cannot encrypt would."""

    def fetch_view(self, message: Any, content: bool = True) -> defer.Deferred[Any]:
        class Refused(ClientError):
            code = "TRANSCODE-FAILED"

        return defer.fail(Refused("cannot transcode"))


def test_view_seam_failure_answers_tagged_no_without_content(tmp_path: Path) -> None:
    """A failing fetch_view gives a tagged NO with its code and writes no message content."""
    session = selected(tmp_path, SINGLE)
    session.server.__class__ = RefusingServer
    session.send(b"a FETCH 1 (BODY[] FLAGS)\r\n")
    out = session.output()
    assert b"a NO [TRANSCODE-FAILED]" in out
    assert b"line one" not in out


def test_refused_fetch_does_not_set_seen(tmp_path: Path) -> None:
    """A body FETCH refused by the view seam leaves the message unread (nothing was sent)."""
    session = selected(tmp_path, SINGLE)
    session.server.__class__ = RefusingServer
    session.send(b"a FETCH 1 (BODY[])\r\n")
    assert b"a NO [TRANSCODE-FAILED]" in session.output()
    session.server.__class__ = TranscodingIMAP4Server
    session.send(b"b FETCH 1 (FLAGS)\r\n")
    out = session.output()
    assert b"b OK" in out and b"\\Seen" not in out


@implementer(imap4.IMessage)
class TwistedStyleMessage:
    """A message as an embedder's store built on Twisted's MIME-object interface gives it."""

    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        return dict(self.headers)

    def getBodyFile(self) -> io.BytesIO:
        return io.BytesIO(self.body)

    def getSize(self) -> int:
        return len(self.body)

    def isMultipart(self) -> bool:
        return False

    def getSubPart(self, part: int) -> Any:
        raise IndexError(part)

    def getUID(self) -> int:
        return 1

    def getFlags(self) -> list[str]:
        return []

    def getInternalDate(self) -> str:
        return "Tue, 07 Feb 2024 10:00:00 +0100"


@implementer(imap4.IMessageFile)
class FileOnlyMessage:
    """A message that only offers its octets (Twisted's IMessageFile)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def run_now(steps: Any) -> defer.Deferred[None]:
    """A MessageProducer scheduler that runs every step at once (no reactor needed)."""
    for _ in steps:
        pass
    return defer.succeed(None)


def fired(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and not isinstance(out[0], Failure), out
    return out[0]


def test_messages_of_other_stores_are_spooled_for_fetch() -> None:
    """Twisted-interface messages (an embedder's store) get bytes and a MIME tree to serve."""
    view = fired(as_parsed_message(TwistedStyleMessage({"Subject": "hi"}, b"body\r\n"), run_now))
    data = view.open().read()
    assert data.endswith(b"\r\n\r\nbody\r\n") and b"Subject: hi\r\n" in data
    assert view.size == len(data) and view.entity().get("subject") == "hi"
    file_view = fired(as_parsed_message(FileOnlyMessage(SINGLE)))
    assert file_view.open().read() == SINGLE and file_view.size == len(SINGLE)
    assert file_view.entity().content_type.param("format") == "Flowed"
