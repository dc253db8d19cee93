"""Sans-IO S/MIME signing with the server's signing key: RFC 8551 ``multipart/signed``.

What a signed S/MIME view encrypts (issue 16, ``XKEY POLICY SIGN ON``): the
inner entity -- the message with its protected header fields (RFC 9788) --
wrapped in ``multipart/signed`` (RFC 1847 section 2.1, RFC 8551 section
3.5.3) with a detached CMS SignedData (RFC 5652 section 5) made with the
server's current signing certificate::

    Content-Type: multipart/signed; protocol="application/pkcs7-signature";
     micalg=sha-256; boundary="signed-<32 hex>"

    --signed-<32 hex>
    <the inner entity, octet for octet>
    --signed-<32 hex>
    Content-Type: application/pkcs7-signature; name=smime.p7s
    Content-Transfer-Encoding: base64
    Content-Disposition: attachment; filename=smime.p7s

    <base64 of the SignedData, 76-column CRLF lines>
    --signed-<32 hex>--

Why ``multipart/signed`` inside the EnvelopedData rather than an opaque
SignedData (``application/pkcs7-mime; smime-type=signed-data``): it is what
Thunderbird itself sends when it signs and encrypts, and what it, Outlook,
Apple Mail and ``openssl cms -verify`` / ``openssl smime -verify`` all
verify; the signed content stays readable as MIME even to a client that
cannot check the signature; and the wrapper is a header and a trailer
around the inner entity, so the entity streams through unchanged.

Byte-stable like every view: the signature is deterministic -- RSA PKCS#1
v1.5, or ECDSA with RFC 6979 nonces (``deterministic_signing``) -- the
signed attributes are only ``contentType`` and ``messageDigest`` (no
``signingTime``: it would differ on every FETCH, RFC 5652 section 11.3), and
the boundary is derived from the entity's SHA-256 (an entity cannot contain
a string derived from its own digest but by breaking SHA-256).

Streaming: the signature needs the entity's digest and the trailer's size
(an ECDSA signature's DER is 70 to 72 octets) is known only once it is made,
while the CMS encoder wants the plaintext's length before its first octet;
so a signed view reads the inner entity twice -- once to hash it
(:func:`entity_digest`, constant memory), once to encrypt it through
:class:`ChainedReader` -- and its prediction (RFC822.SIZE, BODYSTRUCTURE)
hashes the whole message too.  Signatures are remembered per digest and key
(:func:`signature_for`), so prediction and transcoding sign once.

No twisted import here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Octets hashed at a time by :func:`entity_digest`.
CHUNK = 1 << 20


def signed_data_for_digest(digest: bytes, certificate_der: bytes, key: PrivateKey) -> bytes:
    """DER of a detached SignedData (RFC 5652 section 5) over content of SHA-256 ``digest``."""
    cert = asn1_x509.Certificate.load(certificate_der)
    attributes = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
        ]
    )
    # The signature covers the attributes' DER with the SET OF tag (section 5.4).
    to_sign = attributes.dump()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        algorithm = "sha256_rsa"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 6979 deterministic nonces: the same view is the same octets.
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        algorithm = "sha256_ecdsa"
    else:
        raise TypeError("server S/MIME signing keys are RSA or EC")
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


def signed_data(content: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """DER of a detached SignedData over ``content`` (RFC 5652 section 5)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return signed_data_for_digest(hashlib.sha256(content).digest(), der, key)


@dataclass(frozen=True)
class SignedWrapper:
    """The octets around a signed entity: ``header`` (the ``multipart/signed`` header
    section and the first delimiter line), then the entity, then ``trailer`` (the
    signature part and the close-delimiter)."""

    header: bytes
    trailer: bytes

    @property
    def overhead(self) -> int:
        """Octets the wrapper adds to the entity."""
        return len(self.header) + len(self.trailer)


def boundary_for(digest: bytes) -> bytes:
    """The ``multipart/signed`` boundary of the entity whose SHA-256 is ``digest``."""
    return b"signed-" + digest.hex()[:32].encode("ascii")


def wrapper(digest: bytes, signature_der: bytes) -> SignedWrapper:
    """The wrapper of an entity whose SHA-256 is ``digest`` signed by ``signature_der``."""
    boundary = boundary_for(digest)
    encoded = base64.encodebytes(signature_der).replace(b"\n", b"\r\n")
    header = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' micalg=sha-256;\r\n boundary="' + boundary + b'"\r\n\r\n'
        b"--" + boundary + b"\r\n"
    )
    trailer = b"".join(
        (
            # RFC 2046 section 5.1.1: the CRLF before a delimiter belongs to it.
            b"\r\n--" + boundary + b"\r\n",
            b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n",
            encoded,
            b"\r\n--" + boundary + b"--\r\n",
        )
    )
    return SignedWrapper(header, trailer)


#: Signatures remembered (a few hundred octets each).
SIGNATURE_MEMO = 256
_signatures: OrderedDict[tuple[bytes, str], bytes] = OrderedDict()
_signatures_lock = threading.Lock()


def signature_for(digest: bytes, fingerprint: str, certificate_der: bytes, key: Any) -> bytes:
    """The SignedData over ``digest`` by the key whose certificate's fingerprint is
    ``fingerprint``, made once per pair while remembered.

    A view's prediction and its transcoding (often in another thread) need
    the same signature: it is deterministic, so remembering it changes
    nothing but the cost.  The fingerprint names the certificate, and the
    loader checked the key against it (:mod:`transcoder.signing.signers`).
    """
    memo_key = (digest, fingerprint)
    with _signatures_lock:
        known = _signatures.get(memo_key)
        if known is not None:
            _signatures.move_to_end(memo_key)
            return known
    made = signed_data_for_digest(digest, certificate_der, key)
    with _signatures_lock:
        _signatures[memo_key] = made
        while len(_signatures) > SIGNATURE_MEMO:
            _signatures.popitem(last=False)
    return made


def entity_digest(reader: io.RawIOBase, size: int) -> bytes:
    """SHA-256 of the ``size`` octets ``reader`` gives (read in chunks; EOFError if fewer)."""
    digest = hashlib.sha256()
    buffer = bytearray(min(CHUNK, max(size, 1)))
    view = memoryview(buffer)
    remaining = size
    while remaining:
        count = reader.readinto(view[: min(remaining, len(buffer))])
        if not count:
            raise EOFError(f"entity ended {remaining} octets short of {size}")
        digest.update(view[:count])
        remaining -= count
    return digest.digest()


class ChainedReader(io.RawIOBase):
    """A read-only raw file over ``head``, then ``body`` (a raw reader), then ``tail``."""

    def __init__(self, head: bytes, body: io.RawIOBase, tail: bytes) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._body = body
        self._tail = memoryview(tail)
        self._body_done = False

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """The next octets into ``buffer``; 0 at the end."""
        view = memoryview(buffer).cast("B")
        if self._head:
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        if not self._body_done:
            count = self._body.readinto(view)
            if count:
                return count
            self._body_done = True
        count = min(len(view), len(self._tail))
        view[:count] = self._tail[:count]
        self._tail = self._tail[count:]
        return count


def multipart_signed(entity: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """``entity`` (a CRLF-canonical MIME entity, header and body) as a ``multipart/signed``
    entity signed with ``key``; the same octets for the same inputs."""
    if b"\n" in entity.replace(b"\r\n", b""):
        raise ValueError("the entity must be CRLF-canonical (RFC 8551 section 3.1.1)")
    digest = hashlib.sha256(entity).digest()
    if boundary_for(digest) in entity:
        raise ValueError("boundary collision")
    wrapped = wrapper(digest, signed_data(entity, certificate, key))
    return wrapped.header + entity + wrapped.trailer


__all__ = [
    "ChainedReader",
    "SignedWrapper",
    "boundary_for",
    "entity_digest",
    "multipart_signed",
    "signature_for",
    "signed_data",
    "signed_data_for_digest",
    "wrapper",
]
