"""OpenPGP encryption: the native encoder, and the python-gnupg adapter for what it refuses.

* :mod:`transcoder.openpgp.encoder` (with :mod:`~transcoder.openpgp.packets`,
  :mod:`~transcoder.openpgp.armor`, :mod:`~transcoder.openpgp.recipients`):
  a sans-IO streaming encoder (issue 12) -- PKESK v3 for RSA and ECDH, SEIPD
  v1 with the MDC, CRLF armor -- whose every random octet is a labelled draw.
* :mod:`transcoder.openpgp.sign`: signatures by the server's signing subkey
  for signed views (issue 16) -- one-pass signature, literal data and v4
  signature inside the encryption, deterministic (Ed25519, RSA, RFC 6979
  ECDSA) -- written by the encoder in the same pass.
* :mod:`transcoder.openpgp.encrypt`, :mod:`~transcoder.openpgp.keyring`,
  :mod:`~transcoder.openpgp.pool`: gpg through python-gnupg (isolated
  keyring, streaming, a bound on gpg processes), for keys the encoder does
  not implement and ``--openpgp-encoder gpg``.

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
