"""Encryption conversions: any part to application/pkcs7-mime or PGP/MIME, opened by real peers."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from tests.convert.support import ATTACHMENT, SECRET, convert, openssl_open, part_entity
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys
from tests.transcoders.smime_keys import identity
from transcoder.convert import ConversionFailed, ConversionRequest, IConverter
from transcoder.convert.encrypt import PgpMimeConverter, SmimeConverter

pgp = gpgkeys.pgp
PKCS7 = ConversionRequest("application/pkcs7-mime")
PGP = ConversionRequest("multipart/encrypted")


def test_converters_provide_the_interface() -> None:
    """Both encryption converters verify against IConverter."""
    assert verifyObject(IConverter, SmimeConverter())
    assert verifyObject(IConverter, PgpMimeConverter())


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_openssl_opens_the_converted_part_as_its_mime_entity(tmp_path: Path, kind: str) -> None:
    """BINARY of the pkcs7-mime conversion of part 2 is DER that openssl opens to part 2."""
    who = identity(kind)
    converted = convert((2,), PKCS7, (who.key,))
    plain = openssl_open(converted.body, who, tmp_path)
    assert plain == part_entity(2)
    part = email.message_from_bytes(plain, policy=policy.default)
    assert part.get_content() == ATTACHMENT and part.get_filename() == "table.bin"


def test_without_a_key_the_part_fails_and_nothing_is_converted() -> None:
    """No S/MIME key: ERROR BADPARAMETERS for the part, naming source and target."""
    with pytest.raises(ConversionFailed) as failed:
        convert((2,), PKCS7, ())
    assert failed.value.error == "BADPARAMETERS"
    assert (failed.value.source, failed.value.target) == (
        "application/octet-stream",
        "application/pkcs7-mime",
    )


def test_a_bad_cipher_is_a_bad_parameter() -> None:
    """smime-cipher outside the CMS encoder's ciphers fails naming it."""
    who = identity("rsa2048")
    with pytest.raises(ConversionFailed) as failed:
        convert((2,), ConversionRequest(PKCS7.target, (("smime-cipher", "des"),)), (who.key,))
    assert failed.value.params == (("smime-cipher", "des"),)


def test_with_the_view_secret_the_same_conversion_is_the_same_octets() -> None:
    """Derived randomness: same part, keys and parameters give the same octets; another
    section or cipher other octets; no secret: fresh octets each time, same size."""
    who = identity("p256")
    first = convert((2,), PKCS7, (who.key,))
    assert convert((2,), PKCS7, (who.key,)).entity == first.entity
    gcm = ConversionRequest(PKCS7.target, (("smime-cipher", "aes128-gcm"),))
    assert convert((2,), gcm, (who.key,)).entity != first.entity
    assert convert((1,), PKCS7, (who.key,)).entity != first.entity
    fresh = [convert((2,), PKCS7, (who.key,), secret=None) for _ in range(2)]
    assert fresh[0].entity != fresh[1].entity and fresh[0].size == first.size


def test_gpg_opens_the_pgp_mime_conversion(pgp: PgpTestKeys) -> None:
    """multipart/encrypted conversion of part 2: gpg --decrypt yields part 2's entity."""
    converted = convert((2,), PGP, (pgp.x25519,))
    structure = converted.structure()
    assert structure.content_type.subtype == "encrypted"
    assert [c.content_type.subtype for c in structure.children] == ["pgp-encrypted", "octet-stream"]
    armored = converted.entity[structure.children[1].body_start : structure.children[1].end]
    assert pgp.decrypt(armored).plaintext == part_entity(2)
    assert convert((2,), PGP, (pgp.x25519,)).entity == converted.entity


def test_secret_is_part_of_the_identity() -> None:
    """Another secret, other octets."""
    from transcoder.transcoders.derivation import ViewSecret

    who = identity("p256")
    other = convert((2,), PKCS7, (who.key,), secret=ViewSecret(bytes(32)))
    assert other.entity != convert((2,), PKCS7, (who.key,), secret=SECRET).entity


def test_the_cipher_parameter_is_honoured_and_shown_in_the_structure(tmp_path: Path) -> None:
    """smime-cipher aes256-gcm gives authEnveloped-data that openssl opens."""
    who = identity("rsa2048")
    gcm = ConversionRequest(PKCS7.target, (("smime-cipher", "AES256-GCM"),))
    converted = convert((2,), gcm, (who.key,))
    structure = converted.structure()
    assert structure.content_type.param("smime-type") == "authEnveloped-data"
    assert openssl_open(converted.body, who, tmp_path) == part_entity(2)


def test_each_result_knows_whether_its_body_holds_a_nul(pgp: PgpTestKeys) -> None:
    """The literal form (``~{n}`` with a NUL, RFC 3516 section 4.3) is right for every kind
    of result: DER and the decoded attachment hold NULs, the armor and recoded text none."""
    results = {
        "pkcs7": convert((2,), PKCS7, (identity("p256").key,)),
        "pgp": convert((2,), PGP, (pgp.x25519,)),
        "identity": convert((2,), ConversionRequest()),
        "charset": convert((1,), ConversionRequest("text/plain", (("charset", "utf-8"),))),
    }
    for name, converted in results.items():
        assert converted.has_nul == (b"\0" in converted.body), name
    assert [name for name, c in results.items() if c.has_nul] == ["pkcs7", "identity"]
