"""User key material: validation (X.509 for S/MIME, OpenPGP), the keystore, the policy.

Pure code -- no Twisted -- except :mod:`transcoder.keys.async_store`, the
keystore's thread-pool front for the reactor thread.
"""

from transcoder.keys.errors import (
    MAX_KEY_BYTES,
    KeyAddressMismatch,
    KeyInvalid,
    KeyStoreError,
    KeyTooBig,
    NoUsableKey,
)
from transcoder.keys.interfaces import IAsyncKeyStore, IKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import (
    KeyFormat,
    KeyStatus,
    KeyUsage,
    OpenPgpDetails,
    Policy,
    PolicyMode,
    SmimeDetails,
    StoredKey,
    ValidatedKey,
)
from transcoder.keys.openpgp import validate_openpgp_key
from transcoder.keys.smime import validate_certificate
from transcoder.keys.validate import sniff_format, validate_key

__all__ = [
    "MAX_KEY_BYTES",
    "IAsyncKeyStore",
    "IKeyStore",
    "KeyAddressMismatch",
    "KeyFormat",
    "KeyInvalid",
    "KeyStatus",
    "KeyStore",
    "KeyStoreError",
    "KeyTooBig",
    "KeyUsage",
    "NoUsableKey",
    "OpenPgpDetails",
    "Policy",
    "PolicyMode",
    "SmimeDetails",
    "StoredKey",
    "ValidatedKey",
    "sniff_format",
    "validate_certificate",
    "validate_key",
    "validate_openpgp_key",
]
