"""What a converter is (:class:`IConverter`) and the plaintext ones: charset and identity.

Sans-IO: no twisted import.  A converter turns one :class:`SourcePart` into
the converted part, written to a binary file as a MIME entity: its header
(``Content-Type``, ``Content-Transfer-Encoding`` of ``binary``, ``8bit`` or
``7bit``: the body is the content itself, RFC 3516), a blank line, the
body.  The IMAP layer serves the body as ``BINARY[...]``, its length as
``BINARY.SIZE[...]`` and the entity's structure as ``BODYPARTSTRUCTURE[...]``.

* :class:`TextCharsetConverter` -- ``text/plain`` to ``text/plain`` and
  ``text/html`` to ``text/html`` in another charset (RFC 5259 section 7.1,
  :mod:`transcoder.convert.charset`).
* :class:`IdentityConverter` -- a part to its own media type: its content,
  decoded.  What the default conversion (``NIL``) gives a part that is not
  text (RFC 5259 section 6: the most standard type of its category, with the
  least quality loss -- none).
"""

# zope.interface declares methods without ``self``:
# ruff: noqa: N805

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from zope.interface import Attribute, Interface, implementer

from transcoder.convert.charset import TEXT_PARAMETERS, check_text_parameters, recode_into
from transcoder.convert.model import (
    ConversionContext,
    ConversionFailed,
    ConversionRequest,
    Converted,
    SourcePart,
    spool,
)
from transcoder.errors import UnknownTransferEncoding
from transcoder.mime.entity import ContentType

#: Matches any source media type (:attr:`IConverter.source`).
ANY = "*"


class IConverter(Interface):
    """One kind of conversion a server offers (RFC 5259 section 5)."""

    name = Attribute("Short unique name, e.g. 'smime' (str); part of a conversion's identity.")
    source = Attribute("The source media type converted (lower case), or ANY.")
    target = Attribute("The target media type (lower case), or None: the source's own.")
    parameters = Attribute("The conversion parameter names it understands (tuple of str).")
    encrypts = Attribute("Whether it encrypts (logged and failed closed like views).")

    def available(context):
        """Whether it can serve the user of ConversionContext ``context`` (e.g. has a key)."""

    def convert(source, request, context, out):
        """Write the converted SourcePart ``source`` to ``out`` as a MIME entity; a Converted.

        Raises ConversionFailed for a conversion it refuses (parameters,
        keys, an unrepresentable character).
        """


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+\Z")


def _quote(value: str) -> str:
    """A MIME parameter value: a token as it is, else quoted (RFC 2045 section 5.1)."""
    if _TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def content_type_field(media: str, params: tuple[tuple[str, str], ...]) -> bytes:
    """``Content-Type: media; name="value" ...`` and CRLF (values made safe to print)."""
    text = media + "".join(f"; {k}={_quote(v)}" for k, v in params)
    return b"Content-Type: " + text.encode("ascii", "replace") + b"\r\n"


@contextmanager
def decoding(source: SourcePart, target: str) -> Iterator[None]:
    """Make an undecodable CTE met inside fail this conversion (not the command)."""
    try:
        yield
    except UnknownTransferEncoding as e:
        raise ConversionFailed(f"The part cannot be decoded: {e.text}").about(
            source.media_type, target
        ) from None


@implementer(IConverter)
class TextCharsetConverter:
    """A text type to itself in another charset (``charset``, ``unknown-character-replacement``)."""

    encrypts = False
    parameters = TEXT_PARAMETERS

    def __init__(self, media: str) -> None:
        self.source = self.target = media
        self.name = "charset-" + media.replace("/", "-")

    def available(self, context: ConversionContext) -> bool:
        """Always: charset conversions need no key."""
        return True

    def convert(
        self,
        source: SourcePart,
        request: ConversionRequest,
        context: ConversionContext,
        out: BinaryIO,
    ) -> Converted:
        """The part's text in the requested charset (RFC 5259 section 7.1)."""
        if request.target is None and request.get("charset") is None:
            # The default conversion: UTF-8, the standard charset (section 6).
            request = ConversionRequest(None, (*request.params, ("charset", "utf-8")))
        check_text_parameters(request)
        with spool() as body:
            # Recoded into a spool first: the header says 7bit or 8bit, known at the end.
            with decoding(source, self.target):
                recoded = recode_into(
                    source.iter_content(), source.content_type.param("charset"), request, body
                )
            charset = (request.get("charset") or "utf-8").strip().strip('"').lower()
            kept = tuple((k, v) for k, v in source.content_type.params if k != "charset")
            header = content_type_field(self.target, (("charset", charset), *kept))
            encoding = b"7bit" if recoded.ascii_only else b"8bit"
            header += b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n"
            out.write(header)
            size = body.tell()
            body.seek(0)
            shutil.copyfileobj(body, out)
        return Converted(len(header), size, self.target, recoded.has_nul)


@implementer(IConverter)
class IdentityConverter:
    """Any part to its own media type: the content decoded, under the same Content-Type."""

    name = "identity"
    source = ANY
    target = None
    parameters: tuple[str, ...] = ()
    encrypts = False

    def available(self, context: ConversionContext) -> bool:
        """Always."""
        return True

    def convert(
        self,
        source: SourcePart,
        request: ConversionRequest,
        context: ConversionContext,
        out: BinaryIO,
    ) -> Converted:
        """The decoded content (a multipart or message part: its body as it is), written
        piece by piece."""
        media = source.media_type
        if not source.leaf:
            # A multipart or message is not transfer-encoded (RFC 2045 section 6.4): as it is.
            header = source.header()
        else:
            ct: ContentType = source.content_type
            header = content_type_field(media, ct.params) + b"Content-Transfer-Encoding: binary\r\n"
            header += b"\r\n"
        out.write(header)
        with decoding(source, media):
            content = source.decode_into(out)
        return Converted(len(header), content.size, media, content.has_nul)


__all__ = [
    "ANY",
    "IConverter",
    "IdentityConverter",
    "TextCharsetConverter",
    "content_type_field",
    "decoding",
]
