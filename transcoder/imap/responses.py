"""Formatting of IMAP status responses from our error hierarchy (RFC 3501 section 7.1)."""

from __future__ import annotations

from transcoder.errors import ClientError, ServerError, TranscoderError


def _clean(text: str) -> bytes:
    """Text for a status response: one 7-bit line, no CR or LF (RFC 3501 section 9, ``text``)."""
    out = text.replace("\r", " ").replace("\n", " ")
    return out.encode("ascii", "replace")


def status_text(code: str | None, text: str) -> bytes:
    """``[CODE] text`` -- the part of a status response after ``OK``/``NO``/``BAD``.

    RFC 3501 section 9 (``resp-text``) requires text after a response code, so
    an empty text becomes the code's name.
    """
    body = _clean(text).strip() or (code or "completed").encode("ascii")
    if code:
        return b"[" + code.encode("ascii") + b"] " + body
    return body


def error_response(error: TranscoderError) -> tuple[bytes, bytes]:
    """``(status, text)`` for a tagged response answering ``error``.

    Client errors are explained; server errors are opaque (the caller logs
    the detail).
    """
    if isinstance(error, ClientError):
        return error.response.encode("ascii"), status_text(error.code, error.text)
    code = error.code if isinstance(error, ServerError) else "SERVERBUG"
    return b"NO", status_text(code, "Internal server error")
