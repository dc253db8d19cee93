"""Sans-IO CMS encoder: S/MIME EnvelopedData and AuthEnvelopedData, streamed.

Our "hazmat" layer (STYLE.md): the S/MIME transcoder is the recipe on top.
Structures come from asn1crypto, primitives from cryptography; no twisted.

* :class:`CmsSettings` -- content cipher (AES-128/256, CBC or GCM) and RSA
  padding (PKCS#1 v1.5 or OAEP-SHA-256).
* :class:`Recipient` -- built from a certificate; RSA key transport or
  ephemeral-static ECDH key agreement on P-256/P-384/P-521.
* :func:`encrypt_to_smime_body` -- plaintext stream in, base64 body out, in
  constant memory; :func:`smime_body_size` / :func:`enveloped_size` predict
  its size exactly without encrypting.
* :data:`Draw` -- every random value is drawn by label
  (:mod:`transcoder.cms.randomness`), never from OpenSSL's generator, so
  derived draws make the output a pure function of its inputs.
"""

from transcoder.cms.envelope import enveloped_size
from transcoder.cms.errors import CmsError, InputTooShort, UnsupportedRecipient
from transcoder.cms.randomness import Draw, system_draw
from transcoder.cms.recipients import Recipient
from transcoder.cms.settings import CIPHERS, RSA_PADDINGS, CmsSettings, smime_type
from transcoder.cms.stream import encrypt_to_smime_body, smime_body_size

__all__ = [
    "CIPHERS",
    "RSA_PADDINGS",
    "CmsError",
    "CmsSettings",
    "Draw",
    "InputTooShort",
    "Recipient",
    "UnsupportedRecipient",
    "encrypt_to_smime_body",
    "enveloped_size",
    "smime_body_size",
    "smime_type",
    "system_draw",
]
