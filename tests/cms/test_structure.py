"""The DER we produce, field by field, against RFC 5652, 5083/5084, 5753 and 4055."""

from __future__ import annotations

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from tests.cms.draws import FixedRandom, LabelledDraws, scalar_draw
from tests.cms.parties import Party
from tests.cms.peers import body_to_der, encrypt
from transcoder.cms import CmsSettings, enveloped_size
from transcoder.cms.ecdh import EXTRA_OCTETS, PROFILES, scalar_from_octets
from transcoder.cms.randomness import CEK, IV

PLAINTEXT = b"Subject: structure\r\n\r\nbody\r\n" * 7
#: id-ecPublicKey with absent parameters (RFC 5753 section 7.1.2).
EC_ALGORITHM_ABSENT_PARAMS = bytes.fromhex("300906072a8648ce3d0201")
#: id-aes128-wrap / id-aes256-wrap with absent parameters (RFC 3565 section 2.3.2).
WRAP_DER = {
    "aes128_wrap": bytes.fromhex("300b060960864801650304010" + "5"),
    "aes256_wrap": bytes.fromhex("300b06096086480165030401" + "2d"),
}
#: RSAES-OAEP-params with SHA-256 and MGF1-SHA-256, NULL hash parameters as RFC 4055
#: section 2.1 writes them, pSourceFunc omitted (its DEFAULT): RFC 4055 section 4.1.
OAEP_SHA256_PARAMS = bytes.fromhex(
    "302f"
    "a00f300d06096086480165030402010500"
    "a11c301a06092a864886f70d010108300d06096086480165030402010500"
)


def load(der: bytes) -> cms.ContentInfo:
    """Parse strictly (no trailing octets) and check the encoding is canonical DER."""
    info = cms.ContentInfo.load(der, strict=True)
    assert cms.ContentInfo.load(der).dump(force=True) == der
    return info


def test_rsa_cbc_is_enveloped_data_version_0_with_ktri_v0(parties: dict[str, Party]) -> None:
    """RSA + CBC: EnvelopedData v0, one KeyTransRecipientInfo v0 by issuer and serial."""
    party = parties["rsa3072"]
    der = body_to_der(encrypt(PLAINTEXT, [party.recipient()], CmsSettings("aes256-cbc")))
    info = load(der)
    assert info["content_type"].native == "enveloped_data"
    envelope = info["content"]
    assert envelope["version"].native == "v0"
    (recipient,) = envelope["recipient_infos"]
    ktri = recipient.chosen
    assert recipient.name == "ktri" and ktri["version"].native == "v0"
    rid = ktri["rid"].chosen
    assert rid["issuer"].dump() == party.cert.issuer.public_bytes()
    assert rid["serial_number"].native == party.cert.serial_number
    assert ktri["key_encryption_algorithm"].dump().hex() == "300d06092a864886f70d0101010500"
    assert len(ktri["encrypted_key"].native) == 3072 // 8
    assert envelope["encrypted_content_info"]["content_type"].native == "data"
    assert len(der) == enveloped_size(len(PLAINTEXT), [party.recipient()], CmsSettings())


def test_oaep_parameters_name_sha256_and_mgf1_sha256(parties: dict[str, Party]) -> None:
    """RSAES-OAEP: explicit hashFunc SHA-256 and MGF1-SHA-256, default (empty) label."""
    settings = CmsSettings("aes128-cbc", "oaep")
    der = body_to_der(encrypt(PLAINTEXT, [parties["rsa2048"].recipient()], settings))
    algorithm = load(der)["content"]["recipient_infos"][0].chosen["key_encryption_algorithm"]
    assert algorithm["algorithm"].native == "rsaes_oaep"
    assert algorithm["parameters"].dump() == OAEP_SHA256_PARAMS


@pytest.mark.parametrize("cipher", ["aes128-cbc", "aes256-cbc"])
def test_cbc_content_uses_the_injected_key_and_iv(parties: dict[str, Party], cipher: str) -> None:
    """The CEK and the IV are the draws cms/cek and cms/iv; the content decrypts with them."""
    source = FixedRandom()
    settings = CmsSettings(cipher)
    der = body_to_der(encrypt(PLAINTEXT, [parties["rsa2048"].recipient()], settings, draw=source))
    assert source.requests[:2] == [(CEK, settings.key_size), (IV, 16)]
    eci = load(der)["content"]["encrypted_content_info"]
    assert eci["content_encryption_algorithm"]["algorithm"].native == cipher.replace("-", "_")
    assert eci["content_encryption_algorithm"]["parameters"].native == b"\x02" * 16
    ciphertext = eci["encrypted_content"].native
    assert len(ciphertext) == (len(PLAINTEXT) // 16 + 1) * 16
    decryptor = Cipher(algorithms.AES(b"\x01" * settings.key_size), modes.CBC(b"\x02" * 16))
    padded = decryptor.decryptor().update(ciphertext)
    pad = padded[-1]
    assert padded[-pad:] == bytes([pad]) * pad and padded[:-pad] == PLAINTEXT


@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes256-gcm"])
def test_gcm_is_auth_enveloped_data_with_icv_16_in_mac(
    parties: dict[str, Party], cipher: str
) -> None:
    """AES-GCM: AuthEnvelopedData v0, 12-octet nonce, ICVlen 16, the tag in mac, no authAttrs."""
    source = FixedRandom()
    settings = CmsSettings(cipher)
    der = body_to_der(encrypt(PLAINTEXT, [parties["p256"].recipient()], settings, draw=source))
    assert source.requests[:2] == [(CEK, settings.key_size), (IV, 12)]
    info = load(der)
    assert info["content_type"].native == "authenticated_enveloped_data"
    envelope = info["content"]
    assert envelope["version"].native == "v0"
    assert envelope["auth_attrs"].native is None and envelope["unauth_attrs"].native is None
    eci = envelope["auth_encrypted_content_info"]
    algorithm = eci["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == cipher.replace("-", "_")
    # GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING (12), aes-ICVlen INTEGER 16 }
    assert (
        algorithm["parameters"].dump() == bytes.fromhex("3011040c") + b"\x02" * 12 + b"\x02\x01\x10"
    )
    ciphertext = eci["encrypted_content"].native
    tag = envelope["mac"].native
    assert len(ciphertext) == len(PLAINTEXT) and len(tag) == 16
    gcm = Cipher(algorithms.AES(b"\x01" * settings.key_size), modes.GCM(b"\x02" * 12, tag))
    decryptor = gcm.decryptor()
    assert decryptor.update(ciphertext) + decryptor.finalize() == PLAINTEXT


@pytest.mark.parametrize(
    ("party_name", "cipher", "scheme", "wrap", "kdf_hash"),
    [
        ("p256", "aes128-cbc", "1.3.132.1.11.1", "aes128_wrap", hashes.SHA256()),
        ("p256", "aes256-gcm", "1.3.132.1.11.1", "aes256_wrap", hashes.SHA256()),
        ("p384", "aes256-cbc", "1.3.132.1.11.2", "aes256_wrap", hashes.SHA384()),
        ("p521", "aes128-gcm", "1.3.132.1.11.3", "aes128_wrap", hashes.SHA512()),
    ],
)
def test_ec_kari_fields_and_key_derivation(
    parties: dict[str, Party],
    party_name: str,
    cipher: str,
    scheme: str,
    wrap: str,
    kdf_hash: hashes.HashAlgorithm,
) -> None:
    """KeyAgreeRecipientInfo v3: ephemeral originatorKey, no ukm, the KDF scheme by curve,
    the wrap by content key size; the recipient's key unwraps the injected CEK."""
    party = parties[party_name]
    ephemeral = ec.generate_private_key(party.key.curve)
    settings = CmsSettings(cipher)
    draws = LabelledDraws(
        {CEK: b"\x01" * settings.key_size, "cms/recipient/0/ecdh-scalar": scalar_draw(ephemeral)},
        bytes,
    )
    der = body_to_der(encrypt(PLAINTEXT, [party.recipient()], settings, draw=draws))
    envelope = load(der)["content"]
    # RFC 5083: AuthEnvelopedData is always v0; RFC 5652 6.1: EnvelopedData with kari is v2.
    assert envelope["version"].native == ("v0" if settings.authenticated else "v2")
    recipient = envelope["recipient_infos"][0]
    assert recipient.name == "kari"
    kari = recipient.chosen
    assert kari["version"].native == "v3" and kari["ukm"].native is None
    originator = kari["originator"].chosen
    assert kari["originator"].name == "originator_key"
    assert originator["algorithm"].dump() == EC_ALGORITHM_ABSENT_PARAMS
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert originator["public_key"].native == point
    algorithm = kari["key_encryption_algorithm"]
    assert algorithm["algorithm"].dotted == scheme
    assert algorithm["parameters"].dump() == WRAP_DER[wrap]
    (encrypted,) = kari["recipient_encrypted_keys"]
    assert encrypted["rid"].name == "issuer_and_serial_number"
    assert encrypted["rid"].chosen["serial_number"].native == party.cert.serial_number
    # RFC 5753 section 7.2: KEK = X9.63-KDF(Z, ECC-CMS-SharedInfo).
    size = settings.key_size
    shared_info = (
        bytes.fromhex("3015")
        + WRAP_DER[wrap]
        + bytes.fromhex("a2060404")
        + (size * 8).to_bytes(4, "big")
    )
    z = party.key.exchange(ec.ECDH(), ephemeral.public_key())
    # RFC 5753 section 8: the KDF hash is fixed by the scheme, not taken from our table.
    kdf = X963KDF(kdf_hash, size, shared_info)
    kek = kdf.derive(z)
    assert keywrap.aes_key_unwrap(kek, encrypted["encrypted_key"].native) == b"\x01" * size


def test_key_identifier_rids(parties: dict[str, Party]) -> None:
    """use_key_identifier: ktri v2 by subjectKeyIdentifier, kari rKeyId; EnvelopedData v2."""
    rsa_party, ec_party = parties["rsa2048"], parties["p384"]
    recipients = [
        rsa_party.recipient(use_key_identifier=True),
        ec_party.recipient(use_key_identifier=True),
    ]
    envelope = load(body_to_der(encrypt(PLAINTEXT, recipients, CmsSettings())))["content"]
    assert envelope["version"].native == "v2"
    by_kind = {info.name: info.chosen for info in envelope["recipient_infos"]}
    ski = {
        "rsa2048": recipients[0].subject_key_identifier,
        "p384": recipients[1].subject_key_identifier,
    }
    assert by_kind["ktri"]["version"].native == "v2"
    assert by_kind["ktri"]["rid"].name == "subject_key_identifier"
    assert by_kind["ktri"]["rid"].native == ski["rsa2048"]
    rid = by_kind["kari"]["recipient_encrypted_keys"][0]["rid"]
    assert rid.name == "r_key_id"
    assert rid.chosen["subject_key_identifier"].native == ski["p384"]


def test_recipient_infos_are_a_sorted_set(parties: dict[str, Party]) -> None:
    """DER SET OF: the RecipientInfos are in ascending order of their encodings."""
    recipients = [parties[name].recipient() for name in ("p521", "rsa3072", "p256", "rsa2048")]
    infos = load(body_to_der(encrypt(PLAINTEXT, recipients, CmsSettings())))["content"][
        "recipient_infos"
    ]
    encodings = [info.dump() for info in infos]
    assert len(encodings) == 4 and encodings == sorted(encodings)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_curve_orders_bound_the_derived_scalars(curve: ec.EllipticCurve) -> None:
    """The order n behind each derived ephemeral scalar is the curve's: OpenSSL takes n-1, not n."""
    order = PROFILES[curve.name].order
    ec.derive_private_key(order - 1, curve)
    with pytest.raises(ValueError):
        ec.derive_private_key(order, curve)
    size = (order.bit_length() + 7) // 8 + EXTRA_OCTETS
    assert 1 <= scalar_from_octets(b"\xff" * size, order) <= order - 1
    assert scalar_from_octets(bytes(size), order) == 1
