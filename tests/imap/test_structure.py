"""BODY, BODYSTRUCTURE and ENVELOPE encodings (RFC 3501 section 7.4.2 and section 9)."""

from __future__ import annotations

import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from transcoder.imap.sections import resolve_section
from transcoder.imap.structure import body_structure, envelope, string
from transcoder.mime import Entity, parse_message


def parse(text: bytes) -> Entity:
    return parse_message(io.BytesIO(text))


def lines_of(count: int, total: int) -> bytes:
    """``count`` CRLF lines holding ``total`` octets in all (for RFC example sizes)."""
    width = total // count - 2
    body = [b"x" * width for _ in range(count)]
    body[-1] += b"y" * (total - count * (width + 2))
    return b"".join(line + b"\r\n" for line in body)


def via_imapclient(item: bytes, data: bytes) -> object:
    """Parse ``* 1 FETCH (item data)`` with imapclient, literals shaped as imaplib delivers them."""
    pieces: list[bytes | tuple[bytes, bytes]] = []
    rest = b"1 (" + item + b" " + data + b")"
    while m := re.search(rb"\{(\d+)\}\r\n", rest):
        size = int(m.group(1))
        pieces.append((rest[: m.start()] + b"{%d}" % size, rest[m.end() : m.end() + size]))
        rest = rest[m.end() + size :]
    pieces.append(rest)
    return parse_fetch_response(pieces)[1][item]


RFC3501_SAMPLE_HEADER = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
)


def test_rfc3501_sample_body_and_envelope() -> None:
    """The FETCH sample of RFC 3501 section 8 (3028 octets, 92 lines) encodes as the RFC shows."""
    entity = parse(RFC3501_SAMPLE_HEADER + lines_of(92, 3028))
    # The RFC prints parameter names upper-case; we send them lowercased (the
    # same case-insensitive attribute, RFC 2045 section 5.1).
    rfc = b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    assert body_structure(entity, False) == rfc.replace(b'"CHARSET"', b'"charset"')
    assert body_structure(entity, True) == (
        b'("TEXT" "PLAIN" ("charset" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )
    # The RFC's sample prints a space between the two cc addresses; its ABNF
    # (env-cc = "(" 1*address ")") has none, and the ABNF is what we follow.
    assert envelope(entity) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes"'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' ((NIL NIL "imap" "cac.washington.edu"))'
        b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))'
        b' NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_rfc3501_multipart_example() -> None:
    """RFC 3501 section 7.4.2's two-part BODYSTRUCTURE example, rebuilt from a real message."""
    text = (
        b"Content-Type: MULTIPART/MIXED; BOUNDARY=x\r\n\r\n"
        b"--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
        + lines_of(23, 1152)
        + b"\r\n--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        + lines_of(73, 4554)
        + b"\r\n--x--\r\n"
    )
    rfc = (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
        b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    expected = rfc.replace(b'"CHARSET"', b'"charset"').replace(b'"NAME"', b'"name"')
    assert body_structure(parse(text), False) == expected


def test_single_part_size_is_the_body_not_the_message() -> None:
    """BODYSTRUCTURE size of a single-part message is the body's octets (issue 2, defect 3)."""
    data = b"Subject: size\r\nContent-Type: text/plain\r\n\r\n12345\r\n"
    entity = parse(data)
    structure = via_imapclient(b"BODYSTRUCTURE", body_structure(entity, True))
    assert structure[6] == entity.body_size == 7 != len(data)


def test_boundary_keeps_its_case() -> None:
    """The boundary "=_AbC" is reported as written (issue 2, defect 3)."""
    entity = parse(
        b'Content-Type: multipart/mixed; boundary="=_AbC"\r\n\r\n--=_AbC\r\n\r\nx\r\n--=_AbC--\r\n'
    )
    assert b'("boundary" "=_AbC")' in body_structure(entity, True)


def test_extension_data_disposition_language_location_md5() -> None:
    """Extension fields: MD5, disposition with params, language list, location."""
    entity = parse(
        b"Content-Type: application/pdf; name=r.pdf\r\nContent-MD5: Q2hlY2s=\r\n"
        b'Content-Disposition: Attachment; filename="r.pdf"; size=12\r\n'
        b"Content-Language: en, de\r\nContent-Location: http://example.org/r.pdf\r\n\r\n%PDF\r\n"
    )
    assert body_structure(entity, True) == (
        b'("APPLICATION" "PDF" ("name" "r.pdf") NIL NIL "7BIT" 6 "Q2hlY2s="'
        b' ("attachment" ("filename" "r.pdf" "size" "12")) ("en" "de") "http://example.org/r.pdf")'
    )


def test_rfc2231_parameters_stay_encoded_on_the_wire() -> None:
    """RFC 2231 values are sent 7-bit as name* = charset'lang'%XX, continuations joined."""
    entity = parse(b"Content-Type: text/plain; name*0*=utf-8''%E2%82; name*1*=%AC.txt\r\n\r\nx")
    wire = b'("name*" "utf-8\'\'%E2%82%AC.txt" "charset" "us-ascii")'
    assert wire in body_structure(entity, False)


def test_message_rfc822_part() -> None:
    """MESSAGE/RFC822: envelope, nested body and line count after the basic fields."""
    data = (
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nFrom: x@y.example\r\n\r\nhello\r\n--o--\r\n"
    )
    parsed = via_imapclient(b"BODYSTRUCTURE", body_structure(parse(data), True))
    part = parsed[0][0]
    assert part[:7] == (b"MESSAGE", b"RFC822", None, None, None, b"7BIT", 42)
    assert part[7][1] == b"inner"  # the envelope's subject
    assert part[8][:7] == (b"TEXT", b"PLAIN", (b"charset", b"us-ascii"), None, None, b"7BIT", 5)
    assert part[9] == 4  # three CRLF-ended lines and "hello"


def test_degenerate_structures_stay_grammatical() -> None:
    """A multipart without parts and an unparsed message/rfc822 still follow the grammar."""
    empty_multipart = parse(
        b"Content-Type: multipart/mixed; boundary=q\r\n\r\nno delimiter at all\r\n"
    )
    assert body_structure(empty_multipart, False) == (
        b'(("TEXT" "PLAIN" ("charset" "us-ascii") NIL NIL "7BIT" 0 0) "MIXED")'
    )
    opaque = parse(
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdA==\r\n"
    )
    parsed = via_imapclient(b"BODYSTRUCTURE", body_structure(opaque, True))
    assert parsed[:2] == (b"MESSAGE", b"RFC822")
    assert parsed[7] == (None,) * 10  # an all-NIL envelope
    assert parsed[8][:2] == (b"TEXT", b"PLAIN")


def test_envelope_defaults_and_empty_values() -> None:
    """Absent fields are NIL, empty ones ""; sender and reply-to fall back to from."""
    entity = parse(b"From: A <a@x.example>\r\nSender:\r\nSubject:\r\n\r\n")
    parsed = via_imapclient(b"ENVELOPE", envelope(entity))
    assert parsed.date is None and parsed.subject == b""
    assert parsed.sender == parsed.reply_to == parsed.from_
    assert parsed.to is None and parsed.message_id is None


def test_envelope_groups() -> None:
    """Group syntax is encoded with NIL-host start and end markers."""
    entity = parse(b"To: Team: a@x.example;, undisclosed-recipients:;\r\n\r\n")
    assert envelope(entity).split(b" ")[5:] == [
        b"((NIL",
        b"NIL",
        b'"Team"',
        b"NIL)(NIL",
        b"NIL",
        b'"a"',
        b'"x.example")(NIL',
        b"NIL",
        b"NIL",
        b"NIL)(NIL",
        b"NIL",
        b'"undisclosed-recipients"',
        b"NIL)(NIL",
        b"NIL",
        b"NIL",
        b"NIL))",
        b"NIL",
        b"NIL",
        b"NIL",
        b"NIL)",
    ]


def envelope_names(header: bytes) -> list[bytes | None]:
    """The personal names of the ENVELOPE's from addresses, as imapclient reads them."""
    parsed = via_imapclient(b"ENVELOPE", envelope(parse(header + b"\r\n\r\nbody")))
    return [address.name for address in parsed.from_ or ()]


def test_envelope_name_from_comment_of_bare_address() -> None:
    """``user@domain (Real Name)``: the comment is the personal name, as Dovecot reads it."""
    assert envelope_names(b"From: user@example.org (Real Name)") == [b"Real Name"]
    parsed = via_imapclient(
        b"ENVELOPE", envelope(parse(b"From: user@example.org (Real Name)\r\n\r\n"))
    )
    assert parsed.sender[0].name == parsed.reply_to[0].name == b"Real Name"
    assert (parsed.from_[0].mailbox, parsed.from_[0].host) == (b"user", b"example.org")


def test_envelope_name_from_folded_comment() -> None:
    """A comment folded over lines is unfolded (RFC 5322 section 2.2.3) into the name."""
    folded = b"From: user@example.org\r\n (Real\r\n\tName),\r\n other@example.org"
    assert envelope_names(folded) == [b"Real\tName", None]


def test_envelope_name_is_the_last_comment() -> None:
    """With several comments in a bare address the last one names it; leading ones never do."""
    header = b"From: user (one)@ (two) example.org (three) (four), (lead) b@example.org"
    assert envelope_names(header) == [b"four", None]
    assert envelope_names(b"From: a@example.org (Real) ()") == [None]
    assert envelope_names(b"From: postmaster (The Postmaster)") == [b"The Postmaster"]


def test_envelope_comment_name_nesting_and_quoted_pairs() -> None:
    """Nested parentheses stay in the name, quoted-pairs lose their backslash (RFC 5322 3.2.2)."""
    header = b"From: a@example.org (Real \\(Nested\\) (inner \\\\ x))"
    assert envelope_names(header) == [b"Real (Nested) (inner \\ x)"]


def test_phrase_beats_comment() -> None:
    """A display name (quoted or not) is the name; a comment after an angle address is not."""
    header = b'From: "Quoted, Name" <q@example.org> (c1), Plain Name <p@example.org> (c2),'
    header += b" <bare@example.org> (c3)"
    assert envelope_names(header) == [b"Quoted, Name", b"Plain Name", None]


def test_groups_unaffected_by_comments() -> None:
    """A group's name is its phrase, not a comment; its bare members take their comments."""
    entity = parse(b"To: Team (the team): a@x.example (Ann), b@x.example;, c@y.example\r\n\r\n")
    to = via_imapclient(b"ENVELOPE", envelope(entity)).to
    assert [(a.name, a.mailbox, a.host) for a in to] == [
        (None, b"Team", None),
        (b"Ann", b"a", b"x.example"),
        (None, b"b", b"x.example"),
        (None, None, None),
        (None, b"c", b"y.example"),
    ]


def test_eight_bit_headers_go_out_as_literals() -> None:
    """8-bit header octets are sent unchanged in literals; encoded-words stay encoded."""
    entity = parse(
        "Subject: Gr\u00fc\u00dfe\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@x.example>\r\n\r\n".encode()
        + b"body"
    )
    raw = envelope(entity)
    assert b"{7}\r\nGr\xc3\xbc\xc3\x9fe" in raw
    parsed = via_imapclient(b"ENVELOPE", raw)
    assert parsed.subject == "Gr\u00fc\u00dfe".encode()
    assert parsed.from_[0].name == b"=?utf-8?q?J=C3=B6rg?="


def test_string_encoding() -> None:
    """Quoted strings escape \\ and \"; CR, LF and 8-bit force a literal; NUL is dropped."""
    assert string('a"b\\c') == b'"a\\"b\\\\c"'
    assert string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert string(b"nu\x00l") == b'"nul"'
    assert string("") == b'""'


_FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/digest; boundary="c"\r\n',
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b'Content-Disposition: attachment; filename*0*=x\'\'%ff; filename*1="\\""\r\n',
    b"Content-Type: text/plain; name*=base64''%ff; title*=idna''%ff\r\n",
    b"Content-Type: multipart/mixed; boundary*=raw_unicode_escape''%5Cud800\r\n",
    b"Content-Language: en,\r\n",
    b"From: a <b@c>, (comment) d@\r\n",
    b"To: g: x@y;, <@r:z@w>\r\n",
    b"Subject: \xff\xfe\x00\r\n",
    b" folded\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"--c \r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"x",
    b":",
    b'"',
    b"(",
    b"<",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map(b"".join))
def test_arbitrary_input_encodes_to_parsable_responses(data: bytes) -> None:
    """Whatever the message, BODYSTRUCTURE/ENVELOPE parse as IMAP data; sections stay in range."""
    entity = parse(data)
    assert isinstance(via_imapclient(b"BODYSTRUCTURE", body_structure(entity, True)), tuple)
    assert isinstance(via_imapclient(b"BODY", body_structure(entity, False)), tuple)
    assert hasattr(via_imapclient(b"ENVELOPE", envelope(entity)), "message_id")
    stack: list[tuple[Entity, tuple[int, ...]]] = [(entity, ())]
    while stack:
        node, path = stack.pop()
        assert 0 <= node.header_start <= node.body_start <= node.end <= len(data)
        for kind in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            if kind == "MIME" and not path:
                continue
            section = resolve_section(entity, (*path, 1), kind, ("from",))
            assert section.data is not None or 0 <= section.start <= section.end <= len(data)
        stack.extend((child, (*path, i + 1)) for i, child in enumerate(node.children))
