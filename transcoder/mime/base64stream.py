"""Strict, streaming base64 decoding (RFC 4648 section 4), for checks over large bodies.

:class:`Base64Decoder` takes base64 text in pieces cut anywhere and returns
the octets decoded so far; it holds back at most three characters.  It is
strict where lenient decoders guess: the only characters allowed are the
base64 alphabet, ``=`` padding in the last quantum only, and white space
(SP, HT, CR, LF: line breaks of RFC 2045 section 6.8), which is skipped.
Anything else -- a stray word, padding in the middle, a quantum cut short at
the end -- makes the data invalid, and the decoder stays invalid.

No twisted import here.
"""

from __future__ import annotations

import binascii

#: White space base64 text may contain between characters.
WHITESPACE = b" \t\r\n"


class Base64Decoder:
    """Decode base64 text fed in pieces; :attr:`ok` turns false for good on invalid text."""

    def __init__(self) -> None:
        self.ok = True
        self._carry = b""
        self._ended = False

    def feed(self, text: bytes) -> bytes:
        """The octets ``text`` completes (empty once the data is invalid)."""
        chars = text.translate(None, WHITESPACE)
        if not chars or not self.ok:
            return b""
        if self._ended:
            self.ok = False  # characters after the padding
            return b""
        chars = self._carry + chars
        cut = len(chars) - len(chars) % 4
        self._carry = chars[cut:]
        whole = chars[:cut]
        try:  # strict: only the alphabet, padding at the end only (also of the carry, later)
            decoded = binascii.a2b_base64(whole, strict_mode=True)
        except binascii.Error:
            self.ok = False
            return b""
        if whole.endswith(b"="):
            self._ended = True  # RFC 4648 section 3.3: padding ends the data
            if self._carry:
                self.ok = False
                return b""
        return decoded

    def finish(self) -> bool:
        """Whether all the text fed was valid base64 ending on a whole quantum."""
        if self._carry:
            self.ok = False
        return self.ok


__all__ = ["WHITESPACE", "Base64Decoder"]
