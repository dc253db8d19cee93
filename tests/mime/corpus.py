"""A small corpus of MIME messages for the parser tests (built here, LF line ends).

Each entry is written with ``\\n``; tests use it as is (bare-LF messages) and
with ``\\r\\n`` (the store's canonical form).
"""

from __future__ import annotations

SIMPLE = b"""From: Alice <alice@example.org>
To: bob@example.net
Subject: hello
Date: Mon, 1 Jan 2024 10:00:00 +0000
Message-ID: <1@example.org>

Hi Bob,
this is a plain message.
"""

MIXED = b"""From: alice@example.org
Subject: mixed
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_AbC"

This is the preamble.
--=_AbC
Content-Type: text/plain; charset=UTF-8

Body text.
--=_abc is not a delimiter (case differs)
--=_AbCdef is not one either
--=_AbC
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IK
--=_AbC--
This is the epilogue.
"""

NESTED = b"""From: alice@example.org
Subject: nested
Content-Type: multipart/mixed;
 boundary="outer"

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

plain version
--inner \t
Content-Type: text/html

<p>html version</p>
--inner--

--outer
Content-Type: message/rfc822

From: carol@example.com
Subject: forwarded
Content-Type: multipart/mixed; boundary="fwd"

--fwd

implicitly typed part
--fwd
Content-Type: image/png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--fwd--

--outer--
"""

DIGEST = b"""From: list@example.org
Subject: digest
Content-Type: multipart/digest; boundary="dig"

--dig

From: a@example.org
Subject: first

first message
--dig

From: b@example.org
Subject: second

second message
--dig
Content-Type: text/plain

an explicitly typed part
--dig--
"""

EIGHT_BIT = (
    "From: J\u00f6rg M\u00fcller <joerg@example.de>\n"
    "Subject: Gr\u00fc\u00dfe aus K\u00f6ln\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Sch\u00f6ne Gr\u00fc\u00dfe\n"
).encode("utf-8")

MISSING_CLOSE = b"""Subject: no close delimiter
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain

first
--b1
Content-Type: text/plain

second, and the message just stops"""

INNER_UNCLOSED = b"""Subject: inner multipart never closed
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

inner one
--outer
Content-Type: text/plain

outer two
--outer--
"""

RFC2231 = b"""Subject: RFC 2231 parameters
Content-Type: multipart/mixed; boundary*0="split-"; boundary*1="Boundary"

--split-Boundary
Content-Type: application/octet-stream;
 name*0*=utf-8''%E2%82%AC%20price;
 name*1*=%20list.txt
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt

euro
--split-Boundary
Content-Type: text/plain; charset="ISO-8859-1"; format=flowed

latin text
--split-Boundary--
"""

EMPTY_PARTS = b"""Subject: empty parts
Content-Type: multipart/mixed; boundary=e

--e
--e

--e
Content-Type: text/plain

--e
Content-Type: text/plain

no newline before the delimiter
--e--"""

CORPUS = {
    "simple": SIMPLE,
    "mixed": MIXED,
    "nested": NESTED,
    "digest": DIGEST,
    "eight_bit": EIGHT_BIT,
    "missing_close": MISSING_CLOSE,
    "inner_unclosed": INNER_UNCLOSED,
    "rfc2231": RFC2231,
    "empty_parts": EMPTY_PARTS,
}


def crlf(message: bytes) -> bytes:
    """``message`` with every LF turned into CRLF."""
    return message.replace(b"\n", b"\r\n")
