"""DER length arithmetic and base64 line sizes, against independent encoders."""

from __future__ import annotations

import base64

import pytest
from asn1crypto import core

from transcoder.cms import der
from transcoder.cms.base64lines import base64_lines_size


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**24 - 1, 2**24])
def test_header_matches_asn1crypto(length: int) -> None:
    """Our OCTET STRING header is asn1crypto's, short and long forms alike (X.690 8.1.3)."""
    encoded = core.OctetString(b"\x00" * length).dump()
    assert der.header(der.OCTET_STRING, length) == encoded[: len(encoded) - length]
    assert der.tlv_size(length) == len(encoded)


def test_header_matches_asn1crypto_for_large_lengths() -> None:
    """Lengths of multi-gigabyte contents still use the minimal long form."""
    assert der.encode_length(2**32) == b"\x85\x01\x00\x00\x00\x00"
    assert der.encode_length(2**32 - 1) == b"\x84\xff\xff\xff\xff"


def test_negative_length_is_refused() -> None:
    """A negative length is a programming error."""
    with pytest.raises(ValueError):
        der.encode_length(-1)


@pytest.mark.parametrize("length", [*range(0, 200), 912, 913, 57 * 1000, 57 * 1000 + 1])
def test_base64_lines_size_matches_the_stdlib(length: int) -> None:
    """Size of 76-column CRLF base64 equals base64.encodebytes' with CRLF line ends."""
    reference = base64.encodebytes(b"\xa5" * length).replace(b"\n", b"\r\n")
    assert base64_lines_size(length) == len(reference)
