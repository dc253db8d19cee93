"""Sans-IO syntax of XKEY (docs/design.md, "Protocol: XKEY"): arguments in, requests out; data out.

No Twisted here: :mod:`transcoder.imap.xkey` moves the bytes.  Grammar, in
RFC 5234 ABNF over RFC 3501 section 9 (keywords are case-insensitive)::

    command-xkey  = "XKEY" SP ("PUT" SP string
                              / "LIST"
                              / "DELETE" SP fingerprint
                              / "POLICY" [SP policy-change]
                              / "SERVER")
    policy-change = "MODE" SP ("ALWAYS" / "OFF") / "FORMAT" SP ("SMIME" / "OPENPGP")
                    / "SIGN" SP ("ON" / "OFF")
    fingerprint   = atom / quoted     ; hex digits, ":" and SP separators ignored

    response-xkey = "XKEY" SP (xkey-key / xkey-policy / xkey-server)
    xkey-key      = "(" "FORMAT" SP key-format SP "FINGERPRINT" SP string
                    SP "ADDRESSES" SP "(" [string *(SP string)] ")"
                    SP "NOT-AFTER" SP nstring SP "USAGE" SP "(" usage *(SP usage) ")"
                    SP "STATUS" SP ("ACTIVE" / "RETIRED" / "EXPIRED") ")"
    xkey-policy   = "POLICY" SP "(" "MODE" SP ("ALWAYS" / "OFF")
                    SP "FORMAT" SP (key-format / "NIL") SP "SIGN" SP ("ON" / "OFF") ")"
    xkey-server   = "SERVER" SP "(" "FORMAT" SP key-format SP "USAGE" SP "(" usage *(SP usage) ")"
                    SP "FINGERPRINT" SP string SP "SUBKEYS" SP "(" [string *(SP string)] ")"
                    SP "NOT-BEFORE" SP nstring SP "NOT-AFTER" SP nstring
                    SP "MATERIAL" SP literal ")"
    key-format    = "SMIME" / "OPENPGP"
    usage         = "ENCRYPT" / "SIGN"

``NOT-AFTER`` is ``"YYYY-MM-DDTHH:MM:SSZ"`` (UTC) or ``NIL``.  ``SIGN``
(issue 16) is whether views are signed by the server's signing key: the
account's own setting, else the server's ``--sign-views`` default.  ``XKEY SERVER``
answers one ``xkey-server`` per current server key (issue 16): its
``MATERIAL`` is the PEM certificate or the armored OpenPGP public key.  A ``PUT``
literal is announced here (:class:`KeyLiteralAhead`) and read by the server,
as raw octets: DER and binary OpenPGP keys are not text.  Strings in
responses are quoted when they are printable ASCII, literals otherwise
(RFC 3501 section 4.3).  Syntax errors in arguments raise
:class:`~transcoder.errors.BadCommand` (answered ``BAD``).

The server only formats responses; reading them back is the client's job:
:mod:`transcoder.client.syntax` parses them (skipping items it does not know,
so the response can grow), and the tests check this formatter against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from transcoder.errors import BadCommand
from transcoder.keys.model import (
    KeyFormat,
    KeyStatus,
    KeyUsage,
    Policy,
    PolicyMode,
    StoredKey,
    format_timestamp,
    normalize_fingerprint,
)
from transcoder.keys.policy import parse_format, parse_mode, parse_sign, sign_word
from transcoder.keys.server_keys import ServerKey

_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}")
_FINGERPRINT = re.compile(r"[0-9a-f]{1,128}")
#: Text that can go in a quoted string (escaping ``"`` and ``\\``): printable ASCII.
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class PutKey:
    """``XKEY PUT``: store ``material`` (a certificate or an OpenPGP key, raw octets)."""

    material: bytes


@dataclass(frozen=True)
class ListKeys:
    """``XKEY LIST``: report every key of the account."""


@dataclass(frozen=True)
class DeleteKey:
    """``XKEY DELETE``: retire the key ``fingerprint`` (normalized lowercase hex)."""

    fingerprint: str


@dataclass(frozen=True)
class ShowPolicy:
    """``XKEY POLICY``: report the policy."""


@dataclass(frozen=True)
class SetPolicy:
    """``XKEY POLICY MODE ...``, ``... FORMAT ...`` or ``... SIGN ...``: exactly one is set."""

    mode: PolicyMode | None = None
    format: KeyFormat | None = None
    sign: bool | None = None


@dataclass(frozen=True)
class ServerKeys:
    """``XKEY SERVER``: report the server's current public keys (issue 16)."""


XKeyRequest: TypeAlias = PutKey | ListKeys | DeleteKey | ShowPolicy | SetPolicy | ServerKeys


@dataclass(frozen=True)
class KeyLiteralAhead:
    """``XKEY PUT {size}``: the key's ``size`` octets follow (RFC 3501 section 4.3).

    ``non_synchronizing`` for ``{size+}`` (RFC 7888): they follow without a
    continuation request.
    """

    size: int
    non_synchronizing: bool = False


def parse_arguments(line: bytes) -> XKeyRequest | KeyLiteralAhead:
    """The request in XKEY's arguments ``line`` (what follows ``XKEY SP``)."""
    word, _, rest = line.strip(b" ").partition(b" ")
    name = word.upper()
    if name == b"PUT":
        return _parse_put(rest.strip(b" "))
    if name == b"LIST":
        _expect_end(rest, "XKEY LIST takes no arguments")
        return ListKeys()
    if name == b"DELETE":
        return DeleteKey(_parse_fingerprint(rest.strip(b" ")))
    if name == b"POLICY":
        return _parse_policy(rest.split())
    if name == b"SERVER":
        _expect_end(rest, "XKEY SERVER takes no arguments")
        return ServerKeys()
    raise BadCommand("XKEY takes PUT, LIST, DELETE, POLICY or SERVER")


def _parse_put(rest: bytes) -> PutKey | KeyLiteralAhead:
    literal = _LITERAL.fullmatch(rest)
    if literal is not None:
        return KeyLiteralAhead(int(literal.group(1)), bool(literal.group(2)))
    quoted = _QUOTED.match(rest)
    if quoted is None:
        raise BadCommand("XKEY PUT takes the key as a literal or a quoted string")
    _expect_end(rest[quoted.end() :], "XKEY PUT takes one argument")
    return PutKey(_unescape(quoted.group(1)))


def _parse_fingerprint(rest: bytes) -> str:
    quoted = _QUOTED.match(rest)
    if quoted is not None:
        value, after = _unescape(quoted.group(1)), rest[quoted.end() :]
    else:
        value, _, after = rest.partition(b" ")
    _expect_end(after, "XKEY DELETE takes one fingerprint")
    fingerprint = normalize_fingerprint(value.decode("ascii", "replace"))
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise BadCommand("XKEY DELETE takes a fingerprint in hexadecimal")
    return fingerprint


def _parse_policy(words: list[bytes]) -> ShowPolicy | SetPolicy:
    if not words:
        return ShowPolicy()
    if len(words) != 2:
        raise BadCommand(
            "XKEY POLICY takes nothing, MODE ALWAYS|OFF, FORMAT SMIME|OPENPGP or SIGN ON|OFF"
        )
    item, value = words[0].upper(), words[1].decode("ascii", "replace")
    if item == b"MODE":
        return SetPolicy(mode=parse_mode(value))
    if item == b"FORMAT":
        return SetPolicy(format=parse_format(value))
    if item == b"SIGN":
        return SetPolicy(sign=parse_sign(value))
    raise BadCommand("XKEY POLICY sets MODE, FORMAT or SIGN")


def _expect_end(rest: bytes, why: str) -> None:
    if rest.strip(b" "):
        raise BadCommand(why)


def _unescape(quoted: bytes) -> bytes:
    return re.sub(rb'\\(["\\])', rb"\1", quoted)


# -- responses ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyListing:
    """One ``* XKEY (...)`` response: what a client learns about one stored key."""

    format: KeyFormat
    fingerprint: str
    addresses: tuple[str, ...]
    not_after: datetime | None
    usages: frozenset[KeyUsage]
    status: KeyStatus

    @classmethod
    def of(cls, key: StoredKey) -> KeyListing:
        """The listing of a stored key."""
        return cls(
            key.format, key.fingerprint, key.addresses, key.not_after, key.usages, key.status
        )


@dataclass(frozen=True)
class PolicyListing:
    """One ``* XKEY POLICY (...)`` response: the mode, the effective format and SIGN."""

    mode: PolicyMode
    format: KeyFormat | None
    sign: bool = False

    @classmethod
    def of(cls, policy: Policy, sign_default: bool = False) -> PolicyListing:
        """The listing of a policy, the server's SIGN default being ``sign_default``."""
        return cls(policy.mode, policy.format, policy.signs(sign_default))


def imap_string(text: str) -> bytes:
    """``text`` as an IMAP string: quoted when printable ASCII, else a UTF-8 literal."""
    if _PRINTABLE.fullmatch(text):
        return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'
    data = text.encode("utf-8")
    return b"{%d}\r\n" % len(data) + data


def key_response(key: KeyListing) -> bytes:
    """The untagged response for ``key``, without the leading ``* ``."""
    usages = b" ".join(u.value.encode("ascii") for u in KeyUsage if u in key.usages)
    not_after = b"NIL" if key.not_after is None else imap_string(format_timestamp(key.not_after))
    items = (
        b"FORMAT " + key.format.value.encode("ascii"),
        b"FINGERPRINT " + imap_string(key.fingerprint),
        b"ADDRESSES (" + b" ".join(imap_string(a) for a in key.addresses) + b")",
        b"NOT-AFTER " + not_after,
        b"USAGE (" + usages + b")",
        b"STATUS " + key.status.value.encode("ascii"),
    )
    return b"XKEY (" + b" ".join(items) + b")"


def policy_response(policy: PolicyListing) -> bytes:
    """The untagged response for ``policy``, without the leading ``* ``."""
    fmt = b"NIL" if policy.format is None else policy.format.value.encode("ascii")
    sign = sign_word(policy.sign).encode("ascii")
    mode = policy.mode.value.encode("ascii")
    return b"XKEY POLICY (MODE " + mode + b" FORMAT " + fmt + b" SIGN " + sign + b")"


def server_key_response(key: ServerKey) -> bytes:
    """The untagged response for one current server key, without the leading ``* ``."""
    usages = b" ".join(u.value.encode("ascii") for u in KeyUsage if u in key.usages)

    def when(moment: datetime | None) -> bytes:
        return b"NIL" if moment is None else imap_string(format_timestamp(moment))

    items = (
        b"FORMAT " + key.format.value.encode("ascii"),
        b"USAGE (" + usages + b")",
        b"FINGERPRINT " + imap_string(key.fingerprint),
        b"SUBKEYS (" + b" ".join(imap_string(s) for s in key.subkeys) + b")",
        b"NOT-BEFORE " + when(key.not_before),
        b"NOT-AFTER " + when(key.not_after),
        b"MATERIAL {%d}\r\n" % len(key.public) + key.public,
    )
    return b"XKEY SERVER (" + b" ".join(items) + b")"
