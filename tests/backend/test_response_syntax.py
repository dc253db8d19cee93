"""The backend response reader (sans-IO): literals streamed to spools, tokens, status responses."""

from __future__ import annotations

import threading

import pytest

from transcoder.backend.response_syntax import (
    Continuation,
    DataResponse,
    ResponseReader,
    ResponseSyntaxError,
    Spool,
    StatusResponse,
    String,
    format_uid_set,
    parse_response,
    quote,
)


def _parse_all(reader: ResponseReader, *chunks: bytes) -> list[object]:
    out = []
    for chunk in chunks:
        out += [parse_response(pieces) for pieces in reader.feed(chunk)]
    return out


def test_a_fetch_response_split_anywhere_parses_the_same() -> None:
    """Fed in one piece or octet by octet (CRLF and literal split), the tokens are the same."""
    wire = (
        b'* 3 FETCH (UID 7 FLAGS (\\Seen $Label) INTERNALDATE " 5-Dec-2026 06:51:12 +0000"'
        b" BODY[HEADER.FIELDS (SUBJECT)] {14}\r\nSubject: a\r\n\r\n RFC822.SIZE 99)\r\n"
    )
    whole = _parse_all(ResponseReader(), wire)
    split = _parse_all(ResponseReader(), *(wire[i : i + 1] for i in range(len(wire))))
    assert (
        whole
        == split
        == [
            DataResponse(
                (
                    b"3",
                    b"FETCH",
                    [
                        *(b"UID", b"7", b"FLAGS", [b"\\Seen", b"$Label"]),
                        *(b"INTERNALDATE", String(b" 5-Dec-2026 06:51:12 +0000")),
                        *(b"BODY[HEADER.FIELDS (SUBJECT)]", String(b"Subject: a\r\n\r\n")),
                        *(b"RFC822.SIZE", b"99"),
                    ],
                )
            )
        ]
    )


def test_a_large_literal_goes_to_a_file_and_reads_back_whole() -> None:
    """A literal over the memory limit is spooled to disk; every reader gets all octets."""
    body = bytes(range(256)) * 1000
    reader = ResponseReader(memory_limit=1024)
    wire = b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
    responses = _parse_all(reader, *(wire[i : i + 4096] for i in range(0, len(wire), 4096)))
    (response,) = responses
    assert isinstance(response, DataResponse)
    spool = response.tokens[2][3]
    assert isinstance(spool, Spool) and not spool.in_memory and spool.size == len(body)
    results: list[bytes] = []

    def read() -> None:
        with spool.open() as fp:
            results.append(fp.read())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [body] * 4


def test_status_continuation_and_list_responses() -> None:
    """Tagged and untagged status responses keep their code; LIST names may be literals."""
    responses = _parse_all(
        ResponseReader(),
        b"a1 NO [TRYCREATE] No such mailbox\r\n+ go ahead\r\n"
        b'* OK [UIDVALIDITY 42] UIDs valid\r\n* LIST (\\HasNoChildren) "/" {6}\r\nA"b\\&-\r\n'
        b"* 4 EXISTS\r\n* BYE shutting down\r\n",
    )
    assert responses[0] == StatusResponse(b"a1", b"NO", b"TRYCREATE", b"No such mailbox")
    assert responses[1] == Continuation(b"go ahead")
    assert isinstance(responses[2], StatusResponse)
    assert (responses[2].code_name, responses[2].code_argument) == (b"UIDVALIDITY", b"42")
    assert responses[3] == DataResponse(
        (b"LIST", [b"\\HasNoChildren"], String(b"/"), String(b'A"b\\&-'))
    )
    assert isinstance(responses[4], DataResponse)
    assert (responses[4].name, responses[4].number) == (b"EXISTS", 4)
    assert responses[5] == StatusResponse(b"*", b"BYE", None, b"shutting down")


@pytest.mark.parametrize(
    "wire",
    [b"* 1 FETCH (UID 1\r\n", b"* 1 FETCH UID 1)\r\n", b'* LIST () "/ INBOX\r\n', b"a1 FETCH\r\n"],
)
def test_malformed_responses_are_refused(wire: bytes) -> None:
    """Unbalanced lists, unterminated strings and tagged data are syntax errors, not guesses."""
    with pytest.raises(ResponseSyntaxError):
        _parse_all(ResponseReader(), wire)


def test_an_endless_line_is_refused() -> None:
    """A line longer than the cap raises instead of growing memory without bound."""
    reader = ResponseReader()
    with pytest.raises(ResponseSyntaxError):
        for _ in range(20):
            reader.feed(b"x" * 100_000)


def test_quoting_and_uid_sets() -> None:
    """Arguments are quoted with escapes, or left to a literal; UID sets are merged runs."""
    assert quote(b'pa"ss\\word') == b'"pa\\"ss\\\\word"'
    assert quote(b"caf\xc3\xa9") is None
    assert quote(b"a\r\nb") is None
    assert format_uid_set([7, 1, 2, 3, 9, 10]) == b"1:3,7,9:10"


class _TakeFetches:
    """A relay taking every ``* n FETCH``: what it was handed, in order."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ended = 0

    def begin(self, line: bytes) -> bool:
        if b" FETCH " not in line:
            return False
        self.out += line + b"\r\n"
        return True

    def line(self, line: bytes) -> None:
        self.out += line + b"\r\n"

    def octets(self, data: bytes) -> None:
        self.out += data

    def end(self) -> None:
        self.ended += 1


def test_a_relay_gets_fetch_responses_whole_and_the_rest_is_parsed_in_order() -> None:
    """Relayed FETCHes (literals, {0}, lines after literals) arrive intact however split;
    EXISTS and the tagged answer are still parsed, in their place."""
    fetches = (
        b"* 1 FETCH (UID 4 BODY[] {12}\r\nSubject: x\r\n)\r\n",
        b"* 2 FETCH (UID 5 BODY[HEADER] {0}\r\n BODY[TEXT] {3}\r\n}\r\n FLAGS (\\Seen))\r\n",
    )
    wire = fetches[0] + b"* 3 EXISTS\r\n" + fetches[1] + b"b7 OK done\r\n"
    for step in (len(wire), 1, 5):
        relay, reader = _TakeFetches(), ResponseReader()
        reader.relay = relay
        parsed = []
        for i in range(0, len(wire), step):
            for pieces in reader.responses(wire[i : i + step]):
                parsed.append((parse_response(pieces), relay.ended))
        assert bytes(relay.out) == b"".join(fetches)
        assert parsed == [
            (DataResponse((b"3", b"EXISTS")), 1),
            (StatusResponse(b"b7", b"OK", None, b"done"), 2),
        ]
        assert not reader.relaying
