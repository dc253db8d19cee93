"""CONVERSIONS and UID CONVERT (RFC 5259) from the client library, over stdlib imaplib.

:func:`conversions` lists what the server converts for this user;
:func:`convert_part` fetches one body part converted -- e.g. an attachment
enveloped to the user's certificate (``application/pkcs7-mime``: the DER
``openssl cms -decrypt -inform DER`` opens) or sealed with PGP/MIME
(``multipart/encrypted``: :meth:`ConvertedPart.mime_entity` gives the whole
entity ``gpg --decrypt`` reads the armored message from).  A conversion the
server refuses raises :class:`~transcoder.client.model.XKeyError` with the
ERROR phrase's code (``BADPARAMETERS``, ``MISSINGPARAMETERS``, ``TEMPFAIL``).
Every argument is checked before it goes on the wire: nothing a caller
passes can end the command line early.
"""

from __future__ import annotations

import imaplib
import re
from dataclasses import dataclass
from typing import Any

from transcoder.client.model import XKeyConnectionError, XKeyError

# imaplib refuses commands missing from its state table (RFC 5259 section 10).
imaplib.Commands.setdefault("CONVERT", ("SELECTED",))
imaplib.Commands.setdefault("CONVERSIONS", ("AUTH", "SELECTED"))

_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA = re.compile(rf"{_NAME}/{_NAME}\Z")
_REQ = re.compile(rf"(\*|{_NAME}/\*|{_NAME}/{_NAME})\Z")
_SECTION = re.compile(r"([1-9][0-9]{0,9}(\.[1-9][0-9]{0,9})*)?\Z")
_ERROR = re.compile(rb'\(ERROR "((?:[^"\\]|\\.)*)" ([A-Z]+)')
_CONVERSION = re.compile(rb'^"([^"]+)" "([^"]+)"(?: \((.*)\))?$')
_LITERAL = re.compile(rb"BINARY\[[0-9.]*\] ~?\{(\d+)\}$")
_STRUCTURE = re.compile(rb"BODYPARTSTRUCTURE\[[0-9.]*\] (\(.*\)) BINARY\[")


def quote(value: str) -> str:
    """``value`` as an IMAP quoted string; ValueError for CR, LF or NUL (never sent)."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{value!r} cannot be sent in a command line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ConversionInfo:
    """One ``* CONVERSION``: a source media type, a target, the parameters it takes."""

    source: str
    target: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class ConvertedPart:
    """A converted part: its BODYPARTSTRUCTURE (as sent) and its content (``BINARY[...]``)."""

    target: str
    structure: bytes
    data: bytes

    def param(self, name: str) -> str | None:
        """A parameter of the converted part's Content-Type, from its structure."""
        found = re.search(rb'"' + name.encode() + rb'" "([^"]*)"', self.structure, re.I)
        return found.group(1).decode("ascii", "replace") if found else None

    def mime_entity(self) -> bytes:
        """The part as a MIME entity: a Content-Type header (boundary and protocol for a
        multipart, from the structure), a blank line, the content."""
        params = ""
        for name in ("protocol", "boundary", "smime-type"):
            value = self.param(name)
            if value is not None:
                params += f"; {name}={quote(value)}"
        encoding = "7bit" if self.target.startswith("multipart/") else "binary"
        header = f"Content-Type: {self.target}{params}\r\nContent-Transfer-Encoding: {encoding}"
        return header.encode("ascii") + b"\r\n\r\n" + self.data


def _command(imap: imaplib.IMAP4, *args: str) -> tuple[str, list[Any]]:
    try:
        return imap._simple_command(*args)
    except imaplib.IMAP4.abort as exc:
        raise XKeyConnectionError("CONNECTION", str(exc)) from exc
    except imaplib.IMAP4.error as exc:
        raise XKeyError("CLIENTBUG", str(exc), response="BAD") from exc
    except OSError as exc:
        raise XKeyConnectionError("CONNECTION", str(exc)) from exc


def conversions(imap: imaplib.IMAP4, source: str = "*", target: str = "*") -> list[ConversionInfo]:
    """``CONVERSIONS source target``: what the server converts for this user."""
    for value in (source, target):
        if not _REQ.match(value):
            raise ValueError(f"{value!r} is not a media type, type/* or *")
    imap.response("CONVERSION")
    typ, data = _command(imap, "CONVERSIONS", quote(source), quote(target))
    if typ != "OK":
        raise XKeyError(None, str(data))
    _, lines = imap.response("CONVERSION")
    found = []
    for line in lines:
        match = _CONVERSION.match(line or b"")
        if match:
            params = re.findall(rb'"([^"]*)"', match.group(3) or b"")
            names = tuple(p.decode() for p in params)
            found.append(ConversionInfo(match.group(1).decode(), match.group(2).decode(), names))
    return found


def convert_part(
    imap: imaplib.IMAP4,
    mailbox: str,
    uid: int,
    section: str,
    target: str,
    params: tuple[tuple[str, str], ...] = (),
) -> ConvertedPart:
    """``UID CONVERT uid (target (params)) (BODYPARTSTRUCTURE[section] BINARY[section])``.

    Selects ``mailbox`` read-only first (EXAMINE).  Raises XKeyError with the
    ERROR phrase's code when the server refuses the conversion.
    """
    if not _SECTION.match(section):
        raise ValueError(f"{section!r} is not a section (e.g. 2 or 1.3; empty: the message)")
    if not _MEDIA.match(target):
        raise ValueError(f"{target!r} is not a media type (type/subtype)")
    if uid < 1:
        raise ValueError("a UID is a positive number")
    typ, data = imap.select(quote(mailbox), readonly=True)
    if typ != "OK":
        raise XKeyError("NONEXISTENT", f"cannot open {mailbox}: {data}")
    spec = quote(target)
    if params:
        spec += " (" + " ".join(quote(v) for pair in params for v in pair) + ")"
    items = f"(BODYPARTSTRUCTURE[{section}] BINARY[{section}])"
    imap.response("CONVERTED")
    typ, data = _command(imap, "UID", "CONVERT", str(uid), f"({spec})", items)
    _, found = imap.response("CONVERTED")
    return _converted(typ, data, [d for d in found if d is not None], target)


def _converted(typ: str, status: list[Any], found: list[Any], target: str) -> ConvertedPart:
    """The part in the CONVERTED response, or the server's refusal as XKeyError."""
    text = b"".join(d[0] if isinstance(d, tuple) else d for d in found)
    error = _ERROR.search(text)
    if error:
        raise XKeyError(error.group(2).decode(), error.group(1).decode("utf-8", "replace"))
    for item in found:
        if isinstance(item, tuple) and _LITERAL.search(item[0]):
            structure = _STRUCTURE.search(item[0])
            return ConvertedPart(target, structure.group(1) if structure else b"", item[1])
    detail = status[-1].decode("utf-8", "replace") if status and status[-1] else typ
    raise XKeyError(None, f"no converted part in the answer: {detail}")


__all__ = ["ConversionInfo", "ConvertedPart", "conversions", "convert_part", "quote"]
