"""Encryption on request: any part to ``application/pkcs7-mime`` or PGP/MIME.

Sans-IO: no twisted import.  The plaintext is the part as a MIME entity --
its MIME header and its body exactly as stored (RFC 8551 section 3.1: the
inner content of S/MIME is a MIME entity; RFC 3156 section 4 likewise) --
so whoever decrypts gets the part back with its type, name and encoding.

* :class:`SmimeConverter`: the CMS EnvelopedData (AES-CBC) or
  AuthEnvelopedData (AES-GCM, RFC 5083) to every usable S/MIME certificate
  of the user, by the server's CMS encoder (:mod:`transcoder.cms`).  The
  converted part is ``application/pkcs7-mime; smime-type=enveloped-data``
  (or ``authEnveloped-data``) whose content -- ``BINARY[...]`` -- is the DER
  ``ContentInfo`` (``openssl cms -decrypt -inform DER`` opens it).  The
  parameter ``smime-cipher`` picks the content cipher among
  :data:`transcoder.cms.CIPHERS` (default: the server's ``--smime-cipher``).
* :class:`PgpMimeConverter`: RFC 3156 ``multipart/encrypted`` to every
  usable OpenPGP key, by the native encoder (:mod:`transcoder.openpgp`):
  the ``Version: 1`` control part and the armored message.  Its content is
  the multipart body; BODYPARTSTRUCTURE gives its boundary.  Offered only
  when the native encoder can encrypt to every usable key.

Each is offered only when the user has a usable key of its format
(:meth:`available`); asked without one, the part fails with ``ERROR ...
BADPARAMETERS``, never with the plaintext.  Every random octet is a labelled
draw from :class:`~transcoder.convert.model.ConversionRandomness`: with a
view secret, the same part of the same message to the same keys with the
same parameters is the same octets on every server, in every session.
"""

from __future__ import annotations

import binascii
from typing import BinaryIO, cast

from zope.interface import implementer

from transcoder.cms import (
    CIPHERS,
    CmsError,
    CmsSettings,
    Recipient,
    encrypt_to_smime_body,
    smime_type,
)
from transcoder.cms.base64lines import ROW
from transcoder.convert.converters import ANY, IConverter, content_type_field
from transcoder.convert.model import (
    ConversionContext,
    ConversionFailed,
    ConversionRequest,
    Converted,
    SourcePart,
)
from transcoder.keys.model import KeyFormat, StoredKey
from transcoder.openpgp.encoder import encrypt_armored
from transcoder.openpgp.errors import OpenPgpError
from transcoder.openpgp.recipients import recipient_for_key
from transcoder.transcoders.pgpmime import (
    BOUNDARY_BYTES,
    NativePgpMimeTranscoder,
    view_head,
    view_tail,
)
from transcoder.transcoders.selection import usable_keys

#: Octets of one base64 line the CMS encoder writes (76 characters and CRLF).
_LINE = ROW


def _unknown(request: ConversionRequest, known: tuple[str, ...]) -> None:
    unknown = tuple((k, v) for k, v in request.params if k not in known)
    if unknown:
        raise ConversionFailed("Unknown conversion parameters", params=unknown)


def _fingerprints(keys: tuple[StoredKey, ...]) -> tuple[str, ...]:
    return tuple(sorted(k.fingerprint for k in keys))


@implementer(IConverter)
class SmimeConverter:
    """Any part to ``application/pkcs7-mime``, enveloped to the user's S/MIME keys."""

    name = "smime"
    source = ANY
    target = "application/pkcs7-mime"
    parameters = ("smime-cipher",)
    encrypts = True

    def _keys(self, context: ConversionContext) -> tuple[StoredKey, ...]:
        return usable_keys(context.keys, KeyFormat.SMIME, context.now)

    def available(self, context: ConversionContext) -> bool:
        """Whether the user has an active, unexpired S/MIME encryption certificate."""
        return bool(self._keys(context))

    def _settings(self, request: ConversionRequest, context: ConversionContext) -> CmsSettings:
        _unknown(request, self.parameters)
        cipher = request.get("smime-cipher")
        if cipher is None:
            return context.cms
        if cipher.lower() not in CIPHERS:
            raise ConversionFailed(
                f"smime-cipher is one of {', '.join(CIPHERS)}", params=(("smime-cipher", cipher),)
            )
        return CmsSettings(cipher.lower(), context.cms.rsa_padding)

    def convert(
        self,
        source: SourcePart,
        request: ConversionRequest,
        context: ConversionContext,
        out: BinaryIO,
    ) -> Converted:
        """The part's MIME entity as DER CMS under an ``application/pkcs7-mime`` header."""
        settings = self._settings(request, context)
        keys = self._keys(context)
        if not keys:
            raise ConversionFailed("No active S/MIME key to encrypt to")
        try:
            recipients = tuple(Recipient.from_certificate(k.material) for k in keys)
        except CmsError:
            raise ConversionFailed("The S/MIME key cannot be encrypted to") from None
        random = context.randomness.source(
            self.name, _fingerprints(keys), settings.settings_id, request.identity()
        )
        kind = smime_type(settings)
        header = content_type_field(self.target, (("smime-type", kind), ("name", "smime.p7m")))
        header += b"Content-Transfer-Encoding: binary\r\n"
        header += b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        out.write(header + b"\r\n")
        der = _Base64ToDer(out)
        with source.entity_reader() as plaintext:
            encrypt_to_smime_body(
                plaintext,
                source.size,
                cast(BinaryIO, der),
                recipients,
                settings,
                lambda label, size: random.draw(f"convert-smime/{label}", size),
            )
        return Converted(len(header) + 2, der.close(), self.target)


class _Base64ToDer:
    """A sink for the CMS encoder's base64 lines that writes the DER they encode to ``out``.

    The encoder writes 78-octet lines (76 characters and CRLF) in runs;
    whole lines are decoded as they come, a partial one is kept for the next
    write, the short last line at :meth:`close` -- so the DER streams too.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._carry = b""
        self.written = 0

    def write(self, data: bytes | memoryview) -> int:
        """Decode the whole lines of what has come so far."""
        lines = self._carry + bytes(data)
        whole = len(lines) - len(lines) % _LINE
        self._emit(lines[:whole])
        self._carry = lines[whole:]
        return len(data)

    def close(self) -> int:
        """Decode the last line; the DER octets written in all."""
        self._emit(self._carry)
        self._carry = b""
        return self.written

    def _emit(self, lines: bytes) -> None:
        if lines:
            der = binascii.a2b_base64(lines)
            self._out.write(der)
            self.written += len(der)


@implementer(IConverter)
class PgpMimeConverter:
    """Any part to PGP/MIME ``multipart/encrypted``, to the user's OpenPGP keys (native encoder)."""

    name = "pgp-mime"
    source = ANY
    target = "multipart/encrypted"
    parameters: tuple[str, ...] = ()
    encrypts = True

    def __init__(self) -> None:
        self._native = NativePgpMimeTranscoder()

    def _keys(self, context: ConversionContext) -> tuple[StoredKey, ...]:
        keys = usable_keys(context.keys, KeyFormat.OPENPGP, context.now)
        return keys if keys and self._native.can_serve(keys) else ()

    def available(self, context: ConversionContext) -> bool:
        """Whether the user has usable OpenPGP keys, all of them ones the native encoder serves."""
        return bool(self._keys(context))

    def convert(
        self,
        source: SourcePart,
        request: ConversionRequest,
        context: ConversionContext,
        out: BinaryIO,
    ) -> Converted:
        """The part's MIME entity, encrypted and armored, in an RFC 3156 multipart."""
        _unknown(request, self.parameters)
        keys = self._keys(context)
        if not keys:
            raise ConversionFailed("No active OpenPGP key the server can encrypt to")
        try:
            recipients = tuple(recipient_for_key(k) for k in keys)
        except OpenPgpError:
            raise ConversionFailed("The OpenPGP key cannot be encrypted to") from None
        random = context.randomness.source(
            self.name, _fingerprints(keys), self._native.settings_id, request.identity()
        )
        boundary = b"pgp-mime-" + random.draw("convert-pgp/boundary", BOUNDARY_BYTES).hex().encode()
        head = view_head(b"", boundary)
        header_size = head.index(b"\r\n\r\n") + 4
        out.write(head)
        with source.entity_reader() as plaintext:
            armored = encrypt_armored(
                plaintext,
                source.size,
                out,
                recipients,
                lambda label, size: random.draw(f"convert-pgp/{label}", size),
            )
        tail = view_tail(boundary)
        out.write(tail)
        size = len(head) - header_size + armored + len(tail)
        return Converted(header_size, size, self.target, has_nul=False)  # ASCII armor


__all__ = ["PgpMimeConverter", "SmimeConverter"]
