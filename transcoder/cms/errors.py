"""Why the CMS encoder refuses: all are :class:`~transcoder.errors.ServerError`.

The keys layer only admits RSA keys of 2048 bits or more and NIST EC keys, so
a recipient the encoder cannot serve means a bug or a keystore that changed
under us; the client sees an opaque ``NO`` and the detail goes to the log.
"""

from __future__ import annotations

from transcoder.errors import ServerError


class CmsError(ServerError):
    """The CMS encoder could not produce a message."""


class UnsupportedRecipient(CmsError):
    """The certificate's key cannot be encrypted to (type, size or curve not supported)."""


class InputTooShort(CmsError):
    """The plaintext stream ended before the announced length."""
