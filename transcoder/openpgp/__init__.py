"""python-gnupg adapter: isolated keyring, streaming encryption, a bound on gpg processes.

No twisted import: blocking functions over files, which the IMAP layer runs
in worker threads (see docs/design.md, "Layers").
"""

from transcoder.openpgp.encrypt import Readable, check_fingerprint, encrypt_armored
from transcoder.openpgp.errors import GpgFailed
from transcoder.openpgp.keyring import Keyring, KeyringEntry, unusable_reason
from transcoder.openpgp.pool import GpgPool

__all__ = [
    "GpgFailed",
    "GpgPool",
    "Keyring",
    "KeyringEntry",
    "Readable",
    "check_fingerprint",
    "encrypt_armored",
    "unusable_reason",
]
