"""Why key material or a key operation is refused; each maps to an XKEY response code.

The codes are the ones docs/design.md ("Protocol: XKEY") gives the client:
``NO [XKEY-INVALID]``, ``NO [XKEY-ADDRESS]``, ``NO [XKEY-TOOBIG]`` and
``NO [XKEY-NOKEY]``.  Messages are short, specific and safe to show the client:
they describe the client's own input, never server paths or internal state.
"""

from __future__ import annotations

import re

from transcoder.errors import ClientError, ServerError

#: Default cap on key material (one certificate with its chain, or one
#: transferable public key); checked before anything is parsed.
MAX_KEY_BYTES = 256 * 1024


class KeyInvalid(ClientError):
    """The key material is unusable: unparsable, expired, weak or without encryption capability."""

    code = "XKEY-INVALID"


class KeyAddressMismatch(ClientError):
    """No address of the key is the logged-in account's."""

    code = "XKEY-ADDRESS"


class KeyTooBig(ClientError):
    """The key material exceeds the size limit."""

    code = "XKEY-TOOBIG"


class NoUsableKey(ClientError):
    """No usable key for the request (unknown fingerprint, or policy ALWAYS without a key)."""

    code = "XKEY-NOKEY"


class KeyStoreError(ServerError):
    """The keystore database could not complete an operation (nothing was changed)."""


def check_key_size(data: bytes, max_bytes: int = MAX_KEY_BYTES) -> None:
    """Raise :class:`KeyTooBig` when ``data`` is longer than ``max_bytes``; call before parsing."""
    if len(data) > max_bytes:
        raise KeyTooBig(f"key material of {len(data)} octets; at most {max_bytes} accepted")


# Anything outside printable ASCII: a CR or LF from a certificate field must
# never reach an IMAP response line (RFC 3501 section 9: resp-text is TEXT-CHAR).
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def printable(text: str, limit: int = 80) -> str:
    """``text`` made safe for a response line: non-printable ASCII as ``?``, cut to ``limit``."""
    cleaned = _UNPRINTABLE.sub("?", text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
