"""Shared pieces of the CONVERT tests: a test message, contexts, and real decryptors."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

from tests.cms.peers import OPENSSL, require
from tests.keys.certs import NOW
from tests.transcoders.smime_keys import SmimeIdentity
from transcoder.convert import (
    ConversionContext,
    ConversionRandomness,
    ConversionRegistry,
    ConversionRequest,
    ConvertedPart,
    convert_part,
    source_part,
)
from transcoder.keys.model import StoredKey
from transcoder.mime.entity import parse_message
from transcoder.transcoders.derivation import ViewSecret

SECRET = ViewSecret(bytes.fromhex("c0" * 32))
LATIN1_TEXT = "Grüße aus Köln, déjà vu: 100 €".replace("€", "EUR")
UTF8_TEXT = "Ceci n'est pas latin-1: \u20ac, \u0141\u00f3d\u017a, \u65e5\u672c"
ATTACHMENT = bytes(range(256)) * 40

#: Part 1: latin-1 quoted-printable text; part 2: a base64 attachment; part 3: UTF-8 text;
#: part 4: HTML in latin-1.
MESSAGE = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: =?KOI8-R?Q?why_encode_this?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1; format=flowed\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    + LATIN1_TEXT.encode("latin-1")
    .replace(b"\xfc", b"=FC")
    .replace(b"\xdf", b"=DF")
    .replace(b"\xf6", b"=F6")
    .replace(b"\xe9", b"=E9")
    .replace(b"\xe0", b"=E0")
    + b"\r\n"
    b"--b1\r\n"
    b'Content-Type: application/octet-stream; name="table.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="table.bin"\r\n'
    b"\r\n" + base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n") + b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + UTF8_TEXT.encode("utf-8") + b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"\r\n"
    b"<p>" + "Grüße".encode("latin-1") + b"</p>\r\n"
    b"--b1--\r\n"
)


def part_entity(number: int) -> bytes:
    """Part ``number`` of MESSAGE as a MIME entity: its header and encoded body, as stored."""
    body = MESSAGE.split(b"\r\n--b1")[number]
    return body.partition(b"\r\n")[2]


def context(
    keys: tuple[StoredKey, ...] = (), secret: ViewSecret | None = SECRET, section: str = "2"
) -> ConversionContext:
    """A conversion context for MESSAGE's ``section`` at tests.keys.certs.NOW."""
    import hashlib

    digest = hashlib.sha256(MESSAGE).digest()
    return ConversionContext(keys, NOW, ConversionRandomness(secret, digest, section))


def convert(
    part: tuple[int, ...],
    request: ConversionRequest,
    keys: tuple[StoredKey, ...] = (),
    secret: ViewSecret | None = SECRET,
    message: bytes = MESSAGE,
) -> ConvertedPart:
    """Convert ``part`` of ``message`` with the built-in registry."""
    fp = io.BytesIO(message)
    source = source_part(fp, parse_message(fp), part)
    section = ".".join(map(str, part))
    return convert_part(ConversionRegistry(), source, request, context(keys, secret, section))


def openssl_open(der: bytes, who: SmimeIdentity, workdir: Path) -> bytes:
    """``openssl cms -decrypt -inform DER`` of ``der`` with ``who``'s key: the plaintext."""
    openssl = require(OPENSSL, "openssl")
    cert, key = who.write_pem(workdir)
    src = workdir / "part.p7m"
    src.write_bytes(der)
    done = subprocess.run(
        [
            *(openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(src)),
            *("-recip", str(cert), "-inkey", str(key)),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout
