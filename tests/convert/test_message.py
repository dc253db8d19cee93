"""One message's conversions at once: parts, AVAILABLECONVERSIONS, headers, broken converters."""

from __future__ import annotations

import io

from tests.convert.support import MESSAGE, SECRET, context
from tests.transcoders.smime_keys import identity
from transcoder.convert import ConversionFailed, ConversionRegistry, ConversionRequest
from transcoder.convert.engine import ConvertedPart
from transcoder.convert.message import convert_message
from transcoder.mime.entity import parse_message


def run(request: ConversionRequest, registry: ConversionRegistry | None = None, **asked: object):
    fp = io.BytesIO(MESSAGE)
    return convert_message(
        fp,
        parse_message(fp),
        len(MESSAGE),
        registry or ConversionRegistry(),
        request,
        context((identity("p256").key,)),
        SECRET,
        **asked,  # type: ignore[arg-type]
    )


def test_parts_available_targets_and_headers_in_one_pass() -> None:
    """Converting, listing and header items each get their own result; failures are values."""
    result = run(
        ConversionRequest(None, (("charset", "utf-8"),)),
        parts=[(1,), (9,)],
        available=[(1,), (2,), (9,)],
        headers=[((), "HEADER"), ((2,), "MIME")],
    )
    assert isinstance(result.parts[(1,)], ConvertedPart)
    assert isinstance(result.parts[(9,)], ConversionFailed)  # no such part
    assert result.available[(1,)] == ("text/plain",)  # only it takes "charset"
    assert isinstance(result.available[(2,)], ConversionFailed)
    assert isinstance(result.available[(9,)], ConversionFailed)
    assert result.headers[((), "HEADER")].startswith(b"From: Bob")  # type: ignore[union-attr]
    assert result.headers[((2,), "MIME")].startswith(b"Content-Type: application")  # type: ignore[union-attr]


def test_a_broken_converter_is_an_opaque_tempfail_with_a_detail_for_the_log() -> None:
    """An exception in a converter never escapes: TEMPFAIL to the client, the detail kept."""

    class Broken:
        name, source, target, parameters, encrypts = "broken", "*", "x-test/broken", (), True

        def available(self, context: object) -> bool:
            return True

        def convert(self, *args: object) -> object:
            raise ValueError("key material 0xdead")

    result = run(ConversionRequest("x-test/broken"), ConversionRegistry([Broken()]), parts=[(2,)])
    failure = result.parts[(2,)]
    assert isinstance(failure, ConversionFailed)
    assert (failure.error, failure.text) == ("TEMPFAIL", "The part could not be converted")
    assert failure.detail == "ValueError: key material 0xdead"
