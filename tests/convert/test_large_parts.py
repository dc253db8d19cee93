"""Large parts convert in constant memory: the source is read from the message file piece by
piece and the result goes to a spooled temporary file (issue 15; docs/design.md, CONVERT)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.convert.support import context, openssl_open
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys
from tests.transcoders.smime_keys import identity
from transcoder.convert import (
    ConversionRegistry,
    ConversionRequest,
    ConvertedPart,
    convert_part,
    source_part,
)
from transcoder.keys.model import StoredKey
from transcoder.mime.entity import parse_message

pgp = gpgkeys.pgp

#: Decoded octets of the attachment: 27 MB of base64 in the message.
SIZE = 20 * 1000 * 1000
#: What converting it may allocate at the peak, whatever the part's size (measured: 6 MB for
#: PGP/MIME at 5, 20 and 40 MB; the old in-memory engine took over 100 MB for this part).
PEAK = 8 * 1024 * 1024
HEAD = (
    b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\nSubject: big\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
)
PART_HEADER = (
    b'--b1\r\nContent-Type: application/octet-stream; name="big.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """A message file whose part 2 is a 20 MB base64 attachment; (path, the attachment's
    SHA-256, part 2's entity's SHA-256)."""
    path = tmp_path_factory.mktemp("large") / "big.eml"
    payload = os.urandom(SIZE)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    # The CRLF before the closing delimiter belongs to it (RFC 2046 section 5.1.1).
    entity = PART_HEADER[len(b"--b1\r\n") :] + encoded[:-2]
    path.write_bytes(HEAD + PART_HEADER + encoded + b"--b1--\r\n")
    return path, hashlib.sha256(payload).digest(), hashlib.sha256(entity).digest()


def measured(
    path: Path, request: ConversionRequest, keys: tuple[StoredKey, ...]
) -> tuple[ConvertedPart, int]:
    """Convert part 2 of the message at ``path``; the result and tracemalloc's peak."""
    fp = path.open("rb")
    source = source_part(fp, parse_message(fp), (2,))
    tracemalloc.start()
    try:
        converted = convert_part(ConversionRegistry(), source, request, context(keys))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        fp.close()
    return converted, peak


def body_pieces(converted: ConvertedPart) -> Iterator[bytes]:
    """The converted body, 1 MiB at a time."""
    file: BinaryIO = converted.file
    file.seek(converted.header_size)
    left = converted.size
    while left:
        piece = file.read(min(left, 1 << 20))
        assert piece
        left -= len(piece)
        yield piece


def test_identity_of_a_20_mb_attachment(big: tuple[Path, bytes, bytes]) -> None:
    """The default conversion decodes the attachment into the spool: the same octets."""
    path, payload_sha, _ = big
    converted, peak = measured(path, ConversionRequest(), ())
    digest = hashlib.sha256()
    for piece in body_pieces(converted):
        digest.update(piece)
    assert converted.size == SIZE and digest.digest() == payload_sha
    assert peak < PEAK, f"peak {peak} octets"


def test_pkcs7_of_a_20_mb_attachment_opens_with_openssl(
    big: tuple[Path, bytes, bytes], tmp_path: Path
) -> None:
    """application/pkcs7-mime of the 27 MB entity: openssl opens it to the entity."""
    path, _, entity_sha = big
    who = identity("p256")
    converted, peak = measured(path, ConversionRequest("application/pkcs7-mime"), (who.key,))
    assert peak < PEAK, f"peak {peak} octets"
    assert hashlib.sha256(openssl_open(converted.body, who, tmp_path)).digest() == entity_sha


def test_pgp_mime_of_a_20_mb_attachment(big: tuple[Path, bytes, bytes], pgp: PgpTestKeys) -> None:
    """multipart/encrypted of the 27 MB entity: armored, larger than the entity."""
    path, _, _ = big
    converted, peak = measured(path, ConversionRequest("multipart/encrypted"), (pgp.x25519,))
    assert peak < PEAK, f"peak {peak} octets"
    assert converted.size > SIZE * 4 // 3
    assert b"-----BEGIN PGP MESSAGE-----" in converted.body[:4096]


def test_a_20_mb_latin1_text_to_utf8() -> None:
    """Text is recoded piece by piece too: 20 MB of latin-1 (over the 16 MiB an in-memory
    recoding once allowed) becomes the same text in UTF-8, 8bit, in constant memory."""
    line = "Grüße aus Köln, déjà vu ½\r\n"
    text = line * (SIZE // len(line))
    message = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n" + text.encode("latin-1")
    fp = io.BytesIO(message)
    source = source_part(fp, parse_message(fp), ())
    request = ConversionRequest("text/plain", (("charset", "utf-8"),))
    tracemalloc.start()
    try:
        converted = convert_part(ConversionRegistry(), source, request, context())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK, f"peak {peak} octets"
    digest = hashlib.sha256()
    for piece in body_pieces(converted):
        digest.update(piece)
    assert digest.digest() == hashlib.sha256(text.encode("utf-8")).digest()
    header = converted.entity[: converted.header_size]
    assert b"charset=utf-8" in header and b"Content-Transfer-Encoding: 8bit" in header
