"""The built-in S/MIME transcoder: the whole message as one ``application/pkcs7-mime``.

The recipe on top of :mod:`transcoder.cms` (our hazmat layer).  The view is
(RFC 8551 section 3.3, header protection per RFC 9788)::

    <outer header: transcoder.mime.protect>
    MIME-Version: 1.0
    Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
    Content-Transfer-Encoding: base64
    Content-Disposition: attachment; filename="smime.p7m"

    <base64 of the DER ContentInfo, 76-column CRLF lines>

whose plaintext is the inner entity: the original message with its header
fields carried inside.  A signed view (the request has a
:class:`~transcoder.transcoders.interfaces.ViewSigner`, ``XKEY POLICY SIGN
ON``) encrypts that entity wrapped in ``multipart/signed`` with the server's
signing certificate (:mod:`transcoder.signing.smime`, which says why this
form): sign, then encrypt (RFC 8551 section 3.6).  ``smime-type`` is
``authEnveloped-data`` for AES-GCM (RFC 5083, RFC 8551 section 3.2.2).
The inner entity streams from the stored file through the encryptor; only
headers are ever held in memory.  Because the CMS size is a function of the
plaintext length and the recipients, :meth:`SmimeTranscoder.predicted_size`
answers RFC822.SIZE without encrypting (a signed view's prediction hashes
the message and signs it: the signature's size is part of the plaintext's).

Every random value -- content-encryption key, IV or nonce, RSA padding,
ephemeral EC keys -- is drawn from the request (:meth:`TranscodeRequest.draw`)
under a label scoped by a digest of the inner entity's header section and
body extent: together with the message digest in the server's derivation,
the draws are a function of the exact plaintext encrypted, so a change in
how the inner entity is made can never reuse a key and nonce on another
plaintext.

No twisted import here.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from zope.interface import implementer

from transcoder.cms import (
    CmsError,
    CmsSettings,
    Draw,
    Recipient,
    encrypt_to_smime_body,
    enveloped_size,
    smime_body_size,
    smime_type,
)
from transcoder.cms.base64lines import LINE_OCTETS as BASE64_LINE_OCTETS
from transcoder.cms.base64lines import base64_lines_size
from transcoder.keys.model import KeyFormat, KeyStatus, StoredKey
from transcoder.mime.protect import InnerEntityReader, ProtectedParts, parse_top_level, protect
from transcoder.signing.smime import (
    ChainedReader,
    SignedWrapper,
    entity_digest,
    signature_for,
    wrapper,
)
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import (
    ISizePredictor,
    ITranscoder,
    TranscodeRequest,
    TranscodeResult,
    ViewShape,
)
from transcoder.transcoders.selection import usable_keys

#: Bumped whenever the layout of the view changes, so cached views are not reused.
LAYOUT_VERSION = 1


def smime_headers(settings: CmsSettings) -> bytes:
    """The structural fields of the view and the blank line (RFC 8551 sections 3.2, 3.3)."""
    return (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type="
        + smime_type(settings).encode("ascii")
        + b'; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"\r\n"
    )


def settings_id(settings: CmsSettings) -> str:
    """A stable name for the settings that change the output (part of the view-cache key)."""
    return f"smime-v{LAYOUT_VERSION};{settings.settings_id}"


@dataclass(frozen=True)
class _Plan:
    """Everything decided before the first octet is encrypted.

    ``signed``: the ``multipart/signed`` wrapper around the inner entity when
    the view is signed (:mod:`transcoder.signing.smime`), else ``None``.
    """

    parts: ProtectedParts
    header: bytes
    recipients: tuple[Recipient, ...]
    signed: SignedWrapper | None = None

    @property
    def plain_size(self) -> int:
        """Octets encrypted: the inner entity, and the signature wrapper around it."""
        extra = self.signed.overhead if self.signed is not None else 0
        return self.parts.inner_size + extra

    def plaintext(self, source: BinaryIO) -> io.RawIOBase:
        """A reader of exactly the octets encrypted (streamed from ``source``)."""
        inner = InnerEntityReader(source, self.parts)
        if self.signed is None:
            return inner
        return ChainedReader(self.signed.header, inner, self.signed.trailer)


def plaintext_draws(
    request: TranscodeRequest, parts: ProtectedParts, signed: SignedWrapper | None = None
) -> Draw:
    """The request's draws, each label scoped to the inner entity ``parts`` describe.

    The scope is SHA-256 of the inner header section and the body's extent in
    the source (the body's octets are covered by the message digest), and
    of the signature wrapper around them when the view is ``signed``.
    """
    extent = f"{parts.body_start}-{parts.body_end}".encode("ascii")
    scoped = parts.inner_header + b"\0" + extent
    prefix = "smime"
    if signed is not None:
        scoped += b"\0" + signed.header + b"\0" + signed.trailer
        prefix = "smime-signed"
    scope = hashlib.sha256(scoped).hexdigest()[:32]
    return lambda label, size: request.draw(f"{prefix}/{scope}/{label}", size)


@functools.lru_cache(maxsize=1024)
def _recipient(certificate_der: bytes) -> Recipient:
    """The CMS recipient of a certificate, parsed once: a mailbox's messages share one key."""
    return Recipient.from_certificate(certificate_der)


@implementer(ITranscoder, ISizePredictor)
class SmimeTranscoder:
    """Encrypts each message to the user's active S/MIME certificates (every one of them)."""

    name = "smime"
    media_type = "application/pkcs7-mime"
    key_format = KeyFormat.SMIME
    #: Every random value comes from the request's draws (see the module docstring).
    deterministic = True
    #: Signs the view when the request has a signer (:mod:`transcoder.signing.smime`).
    signs = True

    def __init__(self, settings: CmsSettings | None = None) -> None:
        self.settings = settings if settings is not None else CmsSettings()
        self.settings_id = settings_id(self.settings)

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """Whether any key is an active S/MIME certificate with encryption usage."""
        return any(
            k.format is KeyFormat.SMIME and k.status is KeyStatus.ACTIVE and k.can_encrypt
            for k in keys
        )

    def _recipients(self, request: TranscodeRequest) -> tuple[Recipient, ...]:
        """CMS recipients from the usable keys' certificates; TranscodeFailed when none."""
        keys = usable_keys(request.keys, KeyFormat.SMIME, request.now)
        if not keys:
            raise TranscodeFailed("no active, unexpired S/MIME encryption key")
        try:
            return tuple(_recipient(k.material) for k in keys)
        except CmsError as e:  # UnsupportedRecipient: a key the encoder cannot serve
            raise TranscodeFailed(f"unusable recipient certificate: {e}") from e

    def _plan(self, request: TranscodeRequest) -> _Plan:
        """Recipients, protected header sections and the view's header; reads headers only."""
        recipients = self._recipients(request)
        entity = request.top_level
        if entity is None:
            entity = parse_top_level(request.source, request.size)
        parts = protect(entity, request.obscure_subject)
        signed = self._signed(request, parts) if request.signer is not None else None
        header = parts.outer_header + smime_headers(self.settings)
        return _Plan(parts, header, recipients, signed)

    def _signed(self, request: TranscodeRequest, parts: ProtectedParts) -> SignedWrapper:
        """The signature wrapper of the inner entity (reads the whole entity to hash it)."""
        signer = request.signer
        assert signer is not None
        if signer.format is not KeyFormat.SMIME or signer.private_key is None:
            raise TranscodeFailed("an S/MIME view is signed by the server's S/MIME signing key")
        try:
            digest = entity_digest(InnerEntityReader(request.source, parts), parts.inner_size)
            der = signature_for(digest, signer.fingerprint, signer.public, signer.private_key)
        except (EOFError, ValueError, TypeError) as e:
            raise TranscodeFailed(f"S/MIME signing failed: {e}") from e
        return wrapper(digest, der)

    def predicted_size(self, request: TranscodeRequest) -> int:
        """Octets :meth:`transcode` writes for ``request``, computed without encrypting."""
        return self.predicted_shape(request)[1]

    def predicted_shape(self, request: TranscodeRequest) -> tuple[bytes, int]:
        """The view's header section (blank line included) and its size, without encrypting."""
        plan = self._plan(request)
        body = smime_body_size(plan.plain_size, plan.recipients, self.settings)
        return plan.header, len(plan.header) + body

    def predicted_layout(self, request: TranscodeRequest) -> ViewShape:
        """The view's header section, then its base64 body's size and lines (nothing drawn)."""
        plan = self._plan(request)
        der = enveloped_size(plan.plain_size, plan.recipients, self.settings)
        # 57 octets a 76-character CRLF line (RFC 2045 section 6.8).
        lines = (der + BASE64_LINE_OCTETS - 1) // BASE64_LINE_OCTETS
        return ViewShape(plan.header, base64_lines_size(der), lines)

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """Write the S/MIME view of ``request.source`` to ``out``, streaming the body."""
        plan = self._plan(request)
        out.write(plan.header)
        try:
            written = encrypt_to_smime_body(
                # Unbuffered: the encryptor reads whole chunks itself, and a
                # buffer of CHUNK octets per message cost small messages dearly.
                plan.plaintext(request.source),  # type: ignore[arg-type]
                plan.plain_size,
                out,
                plan.recipients,
                self.settings,
                plaintext_draws(request, plan.parts, plan.signed),
            )
        except (CmsError, EOFError) as e:  # the source shrank under us, or a CMS refusal
            raise TranscodeFailed(f"S/MIME encryption failed: {e}") from e
        return TranscodeResult(len(plan.header) + written, self.media_type)


__all__ = ["LAYOUT_VERSION", "SmimeTranscoder", "plaintext_draws", "settings_id", "smime_headers"]
