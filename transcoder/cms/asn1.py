"""ASN.1 types and object identifiers asn1crypto does not define.

* ``GCMParameters`` (RFC 5084 section 3.2), for the AES-GCM content cipher.
* ``ECC-CMS-SharedInfo`` (RFC 5753 section 7.2), the input to the X9.63 KDF.
* The ``dhSinglePass-stdDH-sha*kdf-scheme`` key agreement algorithms
  (RFC 5753 section 7.1.4, SEC 1 / SECG OIDs under 1.3.132.1.11).
"""

from __future__ import annotations

from asn1crypto import cms, core

#: ``id-data`` (RFC 5652 section 4): the inner content is a MIME entity.
DATA = "data"
#: ``id-envelopedData`` (RFC 5652 section 6) as asn1crypto names it.
ENVELOPED_DATA = "enveloped_data"
#: ``id-ct-authEnvelopedData`` (RFC 5083 section 1) as asn1crypto names it.
AUTH_ENVELOPED_DATA = "authenticated_enveloped_data"

#: dhSinglePass-stdDH-sha256kdf-scheme and friends (RFC 5753 section 7.1.4).
DH_SINGLE_PASS_STD_SHA256KDF = "1.3.132.1.11.1"
DH_SINGLE_PASS_STD_SHA384KDF = "1.3.132.1.11.2"
DH_SINGLE_PASS_STD_SHA512KDF = "1.3.132.1.11.3"

#: AES-GCM ICV (tag) length in octets; RFC 5084 section 3.2 allows 12..16, we send 16.
GCM_ICV_LENGTH = 16
#: AES-GCM nonce length in octets; RFC 5084 section 3.2 recommends 12.
GCM_NONCE_LENGTH = 12


class GcmParameters(core.Sequence):
    """``GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen DEFAULT 12 }``."""

    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class EccCmsSharedInfo(core.Sequence):
    """``ECC-CMS-SharedInfo`` (RFC 5753 section 7.2): what both sides feed the KDF.

    ``key_info`` is the key-wrap AlgorithmIdentifier, ``entity_u_info`` the
    ukm (we never send one), ``supp_pub_info`` the KEK length in bits as a
    32-bit big-endian number.
    """

    _fields = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]
