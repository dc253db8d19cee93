"""What CONVERSIONS lists and which converter a request gets (RFC 5259 sections 5, 6, 8.4)."""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from tests.convert.support import context
from tests.transcoders.smime_keys import identity
from transcoder.convert import ConversionFailed, ConversionRegistry, ConversionRequest, IConverter
from transcoder.convert.converters import IdentityConverter, TextCharsetConverter
from transcoder.convert.registry import ConversionLine, matches


def test_builtin_converters_provide_the_interface() -> None:
    """Every built-in converter verifies against IConverter."""
    for converter in ConversionRegistry().converters:
        assert verifyObject(IConverter, converter)
    assert verifyObject(IConverter, TextCharsetConverter("text/plain"))
    assert verifyObject(IConverter, IdentityConverter())


@pytest.mark.parametrize(
    ("pattern", "media", "expected"),
    [
        ("*", "image/png", True),
        ("image/*", "image/png", True),
        ("IMAGE/PNG", "image/png", True),
        ("text/*", "image/png", False),
        ("image/gif", "image/png", False),
    ],
)
def test_media_type_requests_match_as_section_5_1_says(
    pattern: str, media: str, expected: bool
) -> None:
    """*, type/* and type/subtype, case-insensitively."""
    assert matches(pattern, media) is expected


def test_encryption_targets_are_listed_only_with_a_key() -> None:
    """No key: text conversions only; an S/MIME key adds application/pkcs7-mime for any source."""
    registry = ConversionRegistry()
    bare = registry.listing("*", "*", context())
    assert {line.target for line in bare} == {"text/plain", "text/html"}
    keyed = registry.listing("*", "application/pkcs7-mime", context((identity("p256").key,)))
    assert keyed == [
        ConversionLine(source, "application/pkcs7-mime", ("smime-cipher",))
        for source in ("text/plain", "text/html", "application/octet-stream")
    ]


def test_a_concrete_source_lists_the_identity_and_available_targets() -> None:
    """CONVERSIONS "image/png" "*": the identity and the encryption the user can use."""
    registry = ConversionRegistry()
    lines = registry.listing("image/png", "*", context((identity("p256").key,)))
    assert [(line.source, line.target) for line in lines] == [
        ("image/png", "application/pkcs7-mime"),
        ("image/png", "image/png"),
    ]
    assert registry.targets("image/png", context()) == ["image/png"]


def test_choose_refuses_what_is_not_offered_or_not_usable() -> None:
    """An unknown target: BADPARAMETERS without parameters; encryption without a key too."""
    registry = ConversionRegistry()
    with pytest.raises(ConversionFailed) as failed:
        registry.choose("image/png", ConversionRequest("image/jpeg"), context())
    assert (failed.value.source, failed.value.target, failed.value.params) == (
        "image/png",
        "image/jpeg",
        (),
    )
    with pytest.raises(ConversionFailed):
        registry.choose("image/png", ConversionRequest("multipart/encrypted"), context())
    chosen = registry.choose("text/plain", ConversionRequest(None), context())
    assert chosen.target == "text/plain"
