"""The DER framing of a ContentInfo around streamed, encrypted content.

::

    ContentInfo ::= SEQUENCE {                          -- RFC 5652 section 3
      contentType  id-envelopedData | id-ct-authEnvelopedData,
      content      [0] EXPLICIT
        EnvelopedData ::= SEQUENCE {                    -- RFC 5652 section 6.1
          version, recipientInfos SET OF RecipientInfo,
          encryptedContentInfo SEQUENCE {
            contentType id-data, contentEncryptionAlgorithm,
            encryptedContent [0] IMPLICIT OCTET STRING } }   <- streamed
        | AuthEnvelopedData ::= SEQUENCE {              -- RFC 5083 section 2.1
          version 0, recipientInfos, authEncryptedContentInfo (as above),
          mac OCTET STRING }                            <- the GCM tag, after the content

Every length is known from the plaintext length: AES-CBC with PKCS#7 padding
(RFC 5652 section 6.3) yields ``(n // 16 + 1) * 16`` octets, AES-GCM yields
``n`` plus a 16-octet ICV in ``mac`` (RFC 5084 section 3.2).  So the encoding
is definite-length DER throughout, and :func:`frame` returns everything that
precedes the first ciphertext octet, before any of it is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from asn1crypto import algos, cms

from transcoder.cms import der
from transcoder.cms.asn1 import (
    AUTH_ENVELOPED_DATA,
    DATA,
    ENVELOPED_DATA,
    GCM_ICV_LENGTH,
    GCM_NONCE_LENGTH,
    GcmParameters,
)
from transcoder.cms.errors import CmsError
from transcoder.cms.recipients import EncodedInfo, Recipient, placeholder_info
from transcoder.cms.settings import CmsSettings

#: AES block size in octets; also the CBC IV size (RFC 3565 section 2.2).
AES_BLOCK = 16

_DATA_TYPE = cms.ContentType(DATA).dump()
_ENVELOPED_TYPE = cms.ContentType(ENVELOPED_DATA).dump()
_AUTH_ENVELOPED_TYPE = cms.ContentType(AUTH_ENVELOPED_DATA).dump()


def iv_length(settings: CmsSettings) -> int:
    """Octets of the CBC IV (16) or GCM nonce (12) that ``settings`` needs."""
    return GCM_NONCE_LENGTH if settings.authenticated else AES_BLOCK


def encrypted_length(plain_len: int, settings: CmsSettings) -> int:
    """Octets of encryptedContent for ``plain_len`` octets of plaintext.

    CBC always adds 1..16 octets of PKCS#7 padding (RFC 5652 section 6.3);
    GCM is a stream mode and adds nothing there (the ICV goes in ``mac``).
    """
    if plain_len < 0:
        raise ValueError(f"negative plaintext length {plain_len}")
    if settings.authenticated:
        return plain_len
    return (plain_len // AES_BLOCK + 1) * AES_BLOCK


def content_algorithm(settings: CmsSettings, iv: bytes) -> algos.EncryptionAlgorithm:
    """contentEncryptionAlgorithm: AES-CBC with its IV (RFC 3565 section 4.1), or AES-GCM
    with GCMParameters, nonce and ICV length 16 (RFC 5084 section 3.2)."""
    name = settings.cipher.replace("-", "_")
    if settings.authenticated:
        params = GcmParameters({"aes_nonce": iv, "aes_icvlen": GCM_ICV_LENGTH})
        return algos.EncryptionAlgorithm({"algorithm": name, "parameters": params})
    return algos.EncryptionAlgorithm({"algorithm": name, "parameters": iv})


#: Stands for the IV in the algorithm's DER template (unlike any other octets there).
_IV_PLACEHOLDER = bytes(range(0xA0, 0xB0))


@lru_cache(maxsize=16)
def _algorithm_template(settings: CmsSettings) -> tuple[bytes, bytes]:
    """The DER of :func:`content_algorithm` before and after its IV (built once per settings)."""
    placeholder = _IV_PLACEHOLDER[: iv_length(settings)]
    encoded = content_algorithm(settings, placeholder).dump()
    if encoded.count(placeholder) != 1:
        raise CmsError("IV placeholder not unique in the algorithm encoding")
    before, _, after = encoded.partition(placeholder)
    return before, after


def content_algorithm_der(settings: CmsSettings, iv: bytes) -> bytes:
    """``content_algorithm(settings, iv).dump()``, spliced from a template: asn1crypto
    building the same two fields for every message cost more than the rest of the framing."""
    if len(iv) != iv_length(settings):
        raise CmsError(f"IV of {len(iv)} octets, {iv_length(settings)} wanted")
    before, after = _algorithm_template(settings)
    return before + iv + after


@dataclass(frozen=True)
class Framing:
    """What goes around the streamed ciphertext.

    ``prefix`` is all DER up to the first octet of encryptedContent,
    ``content_length`` the octets of ciphertext that follow; for
    AuthEnvelopedData the ``mac`` OCTET STRING (``suffix(tag)``) closes it.
    """

    prefix: bytes
    content_length: int
    authenticated: bool

    @property
    def suffix_length(self) -> int:
        """Octets after the ciphertext: the mac TLV for GCM, none for CBC."""
        return der.tlv_size(GCM_ICV_LENGTH) if self.authenticated else 0

    @property
    def size(self) -> int:
        """Octets of the whole DER ContentInfo."""
        return len(self.prefix) + self.content_length + self.suffix_length

    def suffix(self, tag: bytes) -> bytes:
        """The encoding that follows the ciphertext (RFC 5083 section 2.1: ``mac``)."""
        if not self.authenticated:
            return b""
        if len(tag) != GCM_ICV_LENGTH:
            raise CmsError(f"GCM tag of {len(tag)} octets")
        return der.header(der.OCTET_STRING, len(tag)) + tag


def envelope_version(recipient_versions: Sequence[int], settings: CmsSettings) -> int:
    """CMSVersion of the EnvelopedData (RFC 5652 section 6.1) or AuthEnvelopedData (0).

    Without originatorInfo, unprotectedAttrs, pwri or ori recipients, the
    EnvelopedData version is 0 if every RecipientInfo is version 0, else 2.
    """
    if settings.authenticated or all(v == 0 for v in recipient_versions):
        return 0
    return 2


def frame(
    recipient_infos: Sequence[EncodedInfo],
    algorithm: algos.EncryptionAlgorithm | bytes,
    settings: CmsSettings,
    plain_len: int,
) -> Framing:
    """The framing of a message of ``plain_len`` plaintext octets to ``recipient_infos``.

    ``algorithm`` is the contentEncryptionAlgorithm, or its DER.
    """
    return frame_der(
        _recipient_infos(recipient_infos),
        envelope_version([info.version for info in recipient_infos], settings),
        algorithm if isinstance(algorithm, bytes) else algorithm.dump(),
        settings,
        plain_len,
    )


def _recipient_infos(infos: Sequence[EncodedInfo]) -> bytes:
    """``RecipientInfos ::= SET SIZE (1..MAX) OF RecipientInfo`` in DER.

    X.690 section 11.6: the components of a SET OF appear in ascending order
    of their encodings (no valid encoding is a proper prefix of another, so
    plain octet-string order is that order).
    """
    content = b"".join(sorted(info.der for info in infos))
    return der.header(der.SET, len(content)) + content


def frame_der(
    infos: bytes, version: int, algorithm: bytes, settings: CmsSettings, plain_len: int
) -> Framing:
    """:func:`frame` from the DER of the RecipientInfos SET and of the content algorithm."""
    content_length = encrypted_length(plain_len, settings)
    eci_body = _DATA_TYPE + algorithm + der.header(der.CONTEXT_0_PRIMITIVE, content_length)
    eci_length = len(eci_body) + content_length
    mac_length = der.tlv_size(GCM_ICV_LENGTH) if settings.authenticated else 0
    version_der = cms.CMSVersion(version).dump()
    envelope_length = len(version_der) + len(infos) + der.tlv_size(eci_length) + mac_length
    outer_type = _AUTH_ENVELOPED_TYPE if settings.authenticated else _ENVELOPED_TYPE
    explicit_length = der.tlv_size(envelope_length)
    info_length = len(outer_type) + der.tlv_size(explicit_length)
    prefix = b"".join(
        (
            der.header(der.SEQUENCE, info_length),
            outer_type,
            der.header(der.CONTEXT_0_CONSTRUCTED, explicit_length),
            der.header(der.SEQUENCE, envelope_length),
            version_der,
            infos,
            der.header(der.SEQUENCE, eci_length),
            eci_body,
        )
    )
    return Framing(prefix, content_length, settings.authenticated)


@lru_cache(maxsize=256)
def _size_parts(
    recipients: tuple[Recipient, ...], settings: CmsSettings
) -> tuple[bytes, int, bytes]:
    """(RecipientInfos DER, version, algorithm DER) of the right sizes, with placeholder values."""
    infos = [placeholder_info(r, settings) for r in recipients]
    algorithm = content_algorithm(settings, bytes(iv_length(settings)))
    return (
        _recipient_infos(infos),
        envelope_version([info.version for info in infos], settings),
        algorithm.dump(),
    )


def check_recipients(recipients: Sequence[Recipient]) -> tuple[Recipient, ...]:
    """``recipients`` as a tuple; at least one is required (RFC 5652: SET SIZE (1..MAX))."""
    found = tuple(recipients)
    if not found:
        raise CmsError("no recipient to encrypt to")
    return found


def enveloped_size(plain_len: int, recipients: Sequence[Recipient], settings: CmsSettings) -> int:
    """Octets of the DER ContentInfo for ``plain_len`` octets to ``recipients``.

    Computed without encrypting: every variable part of the message has a
    length fixed by the plaintext length, the recipients' keys and the settings.
    """
    infos, version, algorithm = _size_parts(check_recipients(recipients), settings)
    return frame_der(infos, version, algorithm, settings, plain_len).size
