"""Sans-IO CMS decryption with the server's keys: EnvelopedData and AuthEnvelopedData.

What a client makes with ``openssl cms -encrypt`` (or any S/MIME MUA) to the
server's encryption certificate, RFC 5652 section 6 / RFC 5083:

* recipients: KeyTransRecipientInfo (RSA, PKCS#1 v1.5 or RSAES-OAEP, RFC
  3560) and KeyAgreeRecipientInfo (ephemeral-static ECDH, RFC 5753: X9.63
  KDF over ECC-CMS-SharedInfo, AES key wrap), identified by issuer and serial
  number or by subject key identifier;
* content: AES-CBC (EnvelopedData, RFC 3565) or AES-GCM (AuthEnvelopedData,
  RFC 5084; the tag is the ``mac`` field, authenticated attributes the AAD).

:func:`decrypt_cms` answers ``None`` when no recipient is one of the given
keys -- the message is someone else's ciphertext, the caller stores it as
sent -- and raises :class:`NotDecryptable` when one is ours but decryption
fails (a wrong key, a bad tag, bad padding): one opaque error, as pyca does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from transcoder.cms.asn1 import (
    DH_SINGLE_PASS_STD_SHA256KDF,
    DH_SINGLE_PASS_STD_SHA384KDF,
    DH_SINGLE_PASS_STD_SHA512KDF,
    EccCmsSharedInfo,
)
from transcoder.errors import ClientError
from transcoder.inbound.ber import CHUNK, BerReader, Header

_KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    DH_SINGLE_PASS_STD_SHA256KDF: hashes.SHA256,
    DH_SINGLE_PASS_STD_SHA384KDF: hashes.SHA384,
    DH_SINGLE_PASS_STD_SHA512KDF: hashes.SHA512,
    "1.3.133.16.840.63.0.2": hashes.SHA1,  # dhSinglePass-stdDH-sha1kdf-scheme (RFC 3278)
}
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class NotDecryptable(ClientError):
    """Encrypted to a server key, but it does not decrypt (damaged or tampered with)."""

    code = "CANNOT"


@dataclass(frozen=True)
class DecryptionKey:
    """One server encryption key: its certificate and private key (RSA or EC)."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    fingerprint: str

    def matches(self, rid: cms.RecipientIdentifier | cms.KeyAgreementRecipientIdentifier) -> bool:
        """Whether a RecipientIdentifier names this key's certificate (RFC 5652 6.2.1)."""
        if rid.name == "issuer_and_serial_number":
            ias = rid.chosen
            return bool(
                ias["serial_number"].native == self.certificate.serial_number
                and ias["issuer"].dump() == self.certificate.issuer.public_bytes()
            )
        ski = rid.chosen["subject_key_identifier"] if rid.name == "r_key_id" else rid.chosen
        try:
            mine = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return False
        return bool(ski.native == mine.value.digest)


def decrypt_cms(der: bytes, keys: Sequence[DecryptionKey]) -> tuple[bytes, DecryptionKey] | None:
    """The plaintext of ``der`` and the key that opened it; ``None`` when not ours."""
    try:
        info = cms.ContentInfo.load(der)
        kind = info["content_type"].native
        if kind not in ("enveloped_data", "authenticated_enveloped_data"):
            return None
        envelope = info["content"]
        recipients = list(envelope["recipient_infos"])
    except (ValueError, TypeError, KeyError):
        return None  # not CMS we understand: stored as sent
    for recipient in recipients:
        for key, wrapped in _ours(recipient, keys):
            try:
                cek = _unwrap(recipient, key, wrapped)
                return _decrypt_content(envelope, kind, cek), key
            except (ValueError, TypeError, KeyError, InvalidTag, keywrap.InvalidUnwrap):
                raise NotDecryptable(
                    "encrypted to the server's key but it does not decrypt"
                ) from None
    return None


def _ours(
    recipient: cms.RecipientInfo, keys: Sequence[DecryptionKey]
) -> list[tuple[DecryptionKey, object]]:
    """(key, what to unwrap) for each of our keys this RecipientInfo names."""
    found: list[tuple[DecryptionKey, object]] = []
    if recipient.name == "ktri":
        ktri = recipient.chosen
        found += [(k, ktri) for k in keys if k.matches(ktri["rid"])]
    elif recipient.name == "kari":
        kari = recipient.chosen
        for rek in kari["recipient_encrypted_keys"]:
            found += [(k, (kari, rek)) for k in keys if k.matches(rek["rid"])]
    return found


def _unwrap(recipient: cms.RecipientInfo, key: DecryptionKey, what: object) -> bytes:
    """The content-encryption key."""
    private = key.private_key
    if recipient.name == "ktri":
        assert isinstance(what, cms.KeyTransRecipientInfo) and isinstance(
            private, rsa.RSAPrivateKey
        )
        algorithm = what["key_encryption_algorithm"]
        encrypted = what["encrypted_key"].native
        if algorithm["algorithm"].native == "rsaes_oaep":
            params = algorithm["parameters"]
            digest = _OAEP_HASHES[params["hash_algorithm"]["algorithm"].native]()
            mgf = _OAEP_HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
            return private.decrypt(
                encrypted, asym.OAEP(mgf=asym.MGF1(mgf), algorithm=digest, label=None)
            )
        return private.decrypt(encrypted, asym.PKCS1v15())
    assert isinstance(what, tuple)
    kari: Any = what[0]
    rek: Any = what[1]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise ValueError("only ephemeral originator keys are supported")
    point = originator.chosen["public_key"].native
    peer = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, point)
    shared = private.exchange(ec.ECDH(), peer)
    scheme = kari["key_encryption_algorithm"]
    wrap = cms.KeyEncryptionAlgorithm.load(scheme["parameters"].dump())
    size = {"aes128_wrap": 16, "aes192_wrap": 24, "aes256_wrap": 32}[wrap["algorithm"].native]
    fields: dict[str, object] = {
        "key_info": wrap,
        "supp_pub_info": (size * 8).to_bytes(4, "big"),
    }
    if kari["ukm"].native is not None:
        fields["entity_u_info"] = kari["ukm"].native
    info = EccCmsSharedInfo(fields).dump()
    kdf_hash = _KDF_HASHES[scheme["algorithm"].dotted]
    kek = X963KDF(algorithm=kdf_hash(), length=size, sharedinfo=info).derive(shared)
    return keywrap.aes_key_unwrap(kek, rek["encrypted_key"].native)


def _decrypt_content(envelope: cms.Asn1Value, kind: str, cek: bytes) -> bytes:
    """The encrypted content, decrypted with ``cek``."""
    field = "auth_encrypted_content_info" if kind == "authenticated_enveloped_data" else ""
    content_info = envelope[field or "encrypted_content_info"]
    algorithm = content_info["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    ciphertext = content_info["encrypted_content"].native or b""
    if kind == "authenticated_enveloped_data":
        if not name.endswith("_gcm"):
            raise ValueError(f"unsupported AuthEnvelopedData cipher {name}")
        # GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
        # (RFC 5084 section 3.2); asn1crypto leaves it untyped.
        params = algorithm["parameters"].native
        nonce = params["aes_nonce"] if "aes_nonce" in params else next(iter(params.values()))
        tag = envelope["mac"].native
        aad = envelope["auth_attrs"].dump() if envelope["auth_attrs"].native else None
        if aad is not None:
            aad = b"\x31" + aad[1:]  # RFC 5083 section 2.2: the SET OF tag, not [1]
        return AESGCM(cek).decrypt(nonce, ciphertext + tag, aad)
    if not name.endswith("_cbc"):
        raise ValueError(f"unsupported content cipher {name}")
    iv = algorithm["parameters"].native
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


@lru_cache(maxsize=32)
def load_decryption_key(cert_pem: bytes, key_pem: bytes, fingerprint: str) -> DecryptionKey:
    """A :class:`DecryptionKey` from the server key files' PEM (loaded once per key:
    checking an RSA private key on load costs milliseconds)."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    private = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return DecryptionKey(certificate, private, fingerprint)


# -- streamed: constant memory whatever the message's size -------------------------------

_OIDS = {
    "1.2.840.113549.1.7.3": "enveloped_data",
    "1.2.840.113549.1.9.16.1.23": "authenticated_enveloped_data",
}


def decrypt_cms_file(
    der: BinaryIO, keys: Sequence[DecryptionKey], out: BinaryIO, spool: BinaryIO
) -> DecryptionKey | None:
    """:func:`decrypt_cms` from a file into ``out``, in constant memory; ``spool`` (an
    empty scratch file) holds the ciphertext meanwhile.

    Two passes: the ciphertext is copied to ``spool`` while the structure is
    read (AuthEnvelopedData's authenticated attributes, the GCM AAD, come
    *after* the content, RFC 5083 section 2.1), then decrypted from it.  For
    GCM nothing of ``out`` may be used unless this returns: the tag is
    checked at the end.
    """
    reader = BerReader(der)
    try:
        outer = reader.header()  # ContentInfo
        kind = _OIDS.get(core.ObjectIdentifier.load(reader.element()).dotted)
        if kind is None:
            return None
        explicit, envelope = reader.header(), reader.header()
        reader.element()  # version
        item = reader.element()
        if item[0] == 0xA0:  # originatorInfo [0]
            item = reader.element()
        recipients = list(cms.RecipientInfos.load(item))
        mine = [(r, k, w) for r in recipients for k, w in _ours(r, keys)]
    except (ValueError, TypeError, KeyError):
        return None  # not CMS we understand: stored as sent
    if not mine:
        return None
    recipient, key, wrapped = mine[0]
    try:
        content = reader.header()  # (Auth)EncryptedContentInfo
        reader.element()  # contentType
        algorithm = cms.EncryptionAlgorithm.load(reader.element())
        head: Header | None = reader.header()
        if head is not None and head.tag in (0x80, 0xA0):  # encryptedContent [0] IMPLICIT
            reader.copy_octets(head, spool)
            head = None
        if content.length is None:
            if head is None:
                reader.end_of_contents()
            elif not (head.tag == 0 and head.length == 0):
                raise ValueError("unexpected element in EncryptedContentInfo")
            head = None
        aad, tag = None, b""
        if kind == "authenticated_enveloped_data":
            item = reader.element(head)
            if item[0] == 0xA1:  # authAttrs [1] IMPLICIT: the AAD is their SET OF DER
                aad = b"\x31" + item[1:]
                item = reader.element()
            tag = core.OctetString.load(item).native
        del outer, explicit, envelope
        cek = _unwrap(recipient, key, wrapped)
        spool.seek(0)
        _decrypt_stream(algorithm, cek, spool, out, aad, tag)
    except (ValueError, TypeError, KeyError, IndexError, InvalidTag, keywrap.InvalidUnwrap):
        raise NotDecryptable("encrypted to the server's key but it does not decrypt") from None
    return key


def _decrypt_stream(
    algorithm: cms.EncryptionAlgorithm,
    cek: bytes,
    source: BinaryIO,
    out: BinaryIO,
    aad: bytes | None,
    tag: bytes,
) -> None:
    """Decrypt ``source`` into ``out`` chunk by chunk (AES-CBC with PKCS#7 padding, AES-GCM)."""
    name = algorithm["algorithm"].native
    if name.endswith("_gcm"):
        params = algorithm["parameters"].native
        nonce = params["aes_nonce"] if "aes_nonce" in params else next(iter(params.values()))
        decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce)).decryptor()
        if aad:
            decryptor.authenticate_additional_data(aad)
        while block := source.read(CHUNK):
            out.write(decryptor.update(block))
        out.write(decryptor.finalize_with_tag(tag))
        return
    if not name.endswith("_cbc") or tag:
        raise ValueError(f"unsupported content cipher {name}")
    cbc = Cipher(algorithms.AES(cek), modes.CBC(algorithm["parameters"].native)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    while block := source.read(CHUNK):
        out.write(unpadder.update(cbc.update(block)))
    out.write(unpadder.update(cbc.finalize()) + unpadder.finalize())
