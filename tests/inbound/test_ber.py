"""The BER walk under encrypted APPEND (issue 16): openssl's DER re-encoded with the content
in definite-length segments (X.690 8.7.3, as some encoders write it) still decrypts; damaged
framing is a ValueError, never a hang or a crash."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms, core

from tests.inbound.streamed import openssl_encrypt_der
from transcoder.inbound.ber import BerReader
from transcoder.inbound.cms_decrypt import decrypt_cms_file, load_decryption_key
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys_files import ServerKeyFiles

PLAIN = b"Content-Type: text/plain\r\n\r\n" + b"segmented content\r\n" * 1000


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def segmented(der: bytes, size: int) -> bytes:
    """``der`` (EnvelopedData, primitive encryptedContent) with the content as a definite
    constructed [0] of OCTET STRING segments of ``size`` octets."""
    info = cms.ContentInfo.load(der)
    env = info["content"]
    eci = env["encrypted_content_info"]
    data = eci["encrypted_content"].native
    segments = b"".join(tlv(0x04, data[i : i + size]) for i in range(0, len(data), size))
    new_eci = tlv(
        0x30,
        eci["content_type"].dump()
        + eci["content_encryption_algorithm"].dump()
        + tlv(0xA0, segments),
    )
    body = env["version"].dump() + env["recipient_infos"].dump() + new_eci
    return tlv(0x30, info["content_type"].dump() + tlv(0xA0, tlv(0x30, body)))


@pytest.mark.parametrize("size", [1, 16, 1000])
def test_definite_constructed_content_decrypts(tmp_path: Path, size: int) -> None:
    """Segments of 1, 16 and 1000 octets: the same plaintext as openssl's own encoding."""
    files = ServerKeyFiles(tmp_path / "sk", gpg_binary="no-such-gpg")
    files.ensure(datetime.now(UTC) - timedelta(minutes=1))
    key = files.current_for(KeyFormat.SMIME, KeyUsage.ENCRYPT)
    assert key is not None
    (tmp_path / "c.pem").write_bytes(key.public)
    (tmp_path / "p").write_bytes(PLAIN)
    der = openssl_encrypt_der(tmp_path / "p", tmp_path / "c.pem", "aes-256-cbc")
    reencoded = segmented(der, size)
    assert reencoded != der
    keys = [load_decryption_key(key.public, files.private(key), key.fingerprint)]
    out = io.BytesIO()
    opened = decrypt_cms_file(io.BytesIO(reencoded), keys, out, io.BytesIO())
    assert opened is not None and out.getvalue() == PLAIN


def test_framing_errors_are_value_errors() -> None:
    """Truncated lengths, overlong length fields and primitive indefinite strings."""
    for bad in (b"\x30", b"\x30\x89" + b"\x00" * 9, b"\x30\x05\x01"):
        with pytest.raises(ValueError):
            BerReader(io.BytesIO(bad)).element()
    reader = BerReader(io.BytesIO(b"\x04\x80"))
    with pytest.raises(ValueError):
        reader.copy_octets(reader.header(), io.BytesIO())
    assert core.OctetString.load(BerReader(io.BytesIO(b"\x04\x02hi")).element()).native == b"hi"
