"""Sans-IO S/MIME signing with the server's signing key: RFC 8551 ``multipart/signed``.

The building block for signed views (issue 16, ``XKEY POLICY SIGN ON``): the
entity a view would encrypt is first wrapped in ``multipart/signed`` (RFC
1847, RFC 8551 section 3.5.3) with a detached CMS SignedData (RFC 5652
section 5) from the server's current signing certificate.  Byte-stable like
every view: the signature is deterministic -- RSA PKCS#1 v1.5, or ECDSA with
RFC 6979 nonces -- the signed attributes are only ``contentType`` and
``messageDigest`` (no ``signingTime``: it would differ on every FETCH), and
the boundary is derived from the entity.  Verify with ``openssl cms -verify``.

Not wired into FETCH yet: the view code and the policy (the keystore) belong
to other modules; see docs/design.md, "Server keys".
"""

from __future__ import annotations

import base64
import hashlib

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def signed_data(content: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """DER of a detached SignedData over ``content`` (RFC 5652 section 5)."""
    cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    attributes = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute(
                {"type": "message_digest", "values": [hashlib.sha256(content).digest()]}
            ),
        ]
    )
    # The signature covers the attributes' DER with the SET OF tag (section 5.4).
    to_sign = attributes.dump()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        algorithm = "sha256_rsa"
    else:
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        algorithm = "sha256_ecdsa"
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": cert.issuer, "serial_number": cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attributes,
            "signature_algorithm": {"algorithm": algorithm},
            "signature": signature,
        }
    )
    data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cert],
            "signer_infos": [signer],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": data}).dump())


def multipart_signed(entity: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """``entity`` (a CRLF-canonical MIME entity, header and body) as a ``multipart/signed``
    entity signed with ``key``; the same octets for the same inputs."""
    if b"\n" in entity.replace(b"\r\n", b""):
        raise ValueError("the entity must be CRLF-canonical (RFC 8551 section 3.1.1)")
    boundary = b"signed-" + hashlib.sha256(entity).hexdigest()[:32].encode()
    if boundary in entity:
        raise ValueError("boundary collision")
    signature = base64.encodebytes(signed_data(entity, certificate, key)).replace(b"\n", b"\r\n")
    return b"".join(
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
            b' micalg=sha-256;\r\n boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n",
            entity,
            b"\r\n--" + boundary + b"\r\n",
            b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n",
            signature,
            b"\r\n--" + boundary + b"--\r\n",
        )
    )


__all__ = ["multipart_signed", "signed_data"]
