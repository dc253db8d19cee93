"""CONVERT (RFC 5259): body parts converted on request -- encrypted, or in another charset.

Sans-IO: no twisted import (the IMAP mixin is :mod:`transcoder.imap.convert`).

* :mod:`.model` -- the request, the source part, the result, the per-part failure;
* :mod:`.converters` -- :class:`IConverter`, the charset and identity conversions;
* :mod:`.encrypt` -- any part to ``application/pkcs7-mime`` or PGP/MIME;
* :mod:`.charset` -- text recoding (RFC 5259 section 7.1) and encoded words;
* :mod:`.registry` -- what CONVERSIONS lists and which converter a request gets;
* :mod:`.engine` -- one part of one message converted (blocking; off the reactor);
* :mod:`.message` -- all that one CONVERT asks of one message (blocking);
* :mod:`.syntax` -- the commands' grammar and the responses' formats.
"""

from transcoder.convert.converters import IConverter
from transcoder.convert.engine import ConvertedPart, convert_header, convert_part, source_part
from transcoder.convert.model import (
    ConversionContext,
    ConversionFailed,
    ConversionRandomness,
    ConversionRequest,
    SourcePart,
)
from transcoder.convert.registry import ConversionRegistry

__all__ = [
    "ConversionContext",
    "ConversionFailed",
    "ConversionRandomness",
    "ConversionRegistry",
    "ConversionRequest",
    "ConvertedPart",
    "IConverter",
    "SourcePart",
    "convert_header",
    "convert_part",
    "source_part",
]
