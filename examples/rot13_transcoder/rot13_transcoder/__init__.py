"""DEMO ONLY -- rot13 is NOT encryption.  A toy third-party transcoder for imap-transcoder.

It shows how a plugin is built: provide
:class:`transcoder.transcoders.ITranscoder`, register in the
``transcoder.transcoders`` entry-point group (see ``pyproject.toml``), and
run :class:`transcoder.testing.TranscoderConformance` in your tests.

The view it serves::

    <outer header from transcoder.mime.protect>
    MIME-Version: 1.0
    Content-Type: application/x-rot13-demo
    Content-Description: DEMO ONLY - rot13 is not encryption

    <rot13 of the inner entity: the original message, header fields inside>

To keep a mistaken install harmless it serves only keys whose every address
lies under a domain reserved for testing (RFC 2606, RFC 6761).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import BinaryIO

from zope.interface import implementer

from transcoder.keys import KeyFormat, KeyStatus, StoredKey
from transcoder.mime.protect import InnerEntityReader, ProtectedParts, parse_top_level, protect
from transcoder.transcoders import (
    ISizePredictor,
    ITranscoder,
    TranscodeFailed,
    TranscodeRequest,
    TranscodeResult,
    usable_keys,
)

#: Octets rot13'd at a time: memory stays flat whatever the message size.
CHUNK = 1 << 16
_ROT13 = bytes.maketrans(
    (string.ascii_lowercase + string.ascii_uppercase).encode(),
    (
        string.ascii_lowercase[13:]
        + string.ascii_lowercase[:13]
        + string.ascii_uppercase[13:]
        + string.ascii_uppercase[:13]
    ).encode(),
)
_HEADER = (
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/x-rot13-demo\r\n"
    b"Content-Description: DEMO ONLY - rot13 is not encryption\r\n"
    b"\r\n"
)
#: Second-level domains reserved for documentation (RFC 2606 section 3).
_RESERVED_DOMAINS = ("example.org", "example.com", "example.net")
#: Top-level domains reserved for testing (RFC 2606 section 2, RFC 6761 section 6).
_RESERVED_TLDS = ("example", "test", "invalid")


def rot13(data: bytes) -> bytes:
    """``data`` with ASCII letters rotated by 13 (its own inverse)."""
    return data.translate(_ROT13)


def _reserved(address: str) -> bool:
    """Whether ``address`` is under a domain reserved for tests and examples."""
    domain = address.rpartition("@")[2].lower().rstrip(".")
    if domain.rpartition(".")[2] in _RESERVED_TLDS:
        return True
    return any(domain == d or domain.endswith("." + d) for d in _RESERVED_DOMAINS)


def is_demo_key(key: StoredKey) -> bool:
    """An active OpenPGP encryption key whose every address is reserved for testing."""
    return (
        key.format is KeyFormat.OPENPGP
        and key.status is KeyStatus.ACTIVE
        and key.can_encrypt
        and bool(key.addresses)
        and all(_reserved(a) for a in key.addresses)
    )


@implementer(ITranscoder, ISizePredictor)
class Rot13Transcoder:
    """DEMO ONLY: "encrypts" with rot13.  Never use it for real mail."""

    name = "rot13-demo"
    media_type = "application/x-rot13-demo"
    key_format = KeyFormat.OPENPGP
    settings_id = "rot13-demo-v1"

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """Whether any key is a demo key (see :func:`is_demo_key`)."""
        return any(is_demo_key(k) for k in keys)

    def _check_keys(self, request: TranscodeRequest) -> None:
        """TranscodeFailed unless a demo key is usable at ``request.now``."""
        usable = usable_keys(request.keys, self.key_format, request.now)
        if not any(is_demo_key(k) for k in usable):
            raise TranscodeFailed("rot13-demo serves only test-domain keys")

    def _parts(self, request: TranscodeRequest) -> ProtectedParts:
        self._check_keys(request)
        return protect(parse_top_level(request.source, request.size), request.obscure_subject)

    def predicted_shape(self, request: TranscodeRequest) -> tuple[bytes, int]:
        """rot13 keeps lengths: the view's header (outer fields and ours) and its size."""
        parts = self._parts(request)
        header = parts.outer_header + _HEADER
        return header, len(header) + parts.inner_size

    def predicted_size(self, request: TranscodeRequest) -> int:
        """See :meth:`predicted_shape`."""
        return self.predicted_shape(request)[1]

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """Write the demo view: outer header, our fields, rot13 of the inner entity."""
        parts = self._parts(request)
        out.write(parts.outer_header + _HEADER)
        inner = InnerEntityReader(request.source, parts)
        while chunk := inner.read(CHUNK):
            out.write(rot13(chunk))
        size = len(parts.outer_header) + len(_HEADER) + parts.inner_size
        return TranscodeResult(size, self.media_type)


__all__ = ["Rot13Transcoder", "is_demo_key", "rot13"]
