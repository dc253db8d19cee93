"""Parse gpg's machine-readable key listing (``--with-colons --fixed-list-mode``).

Field numbers follow GnuPG's doc/DETAILS ("Format of the colon listings"):
1 record type, 2 validity, 3 key length, 4 public key algorithm, 5 key ID,
6 creation date, 7 expiration date, 10 user ID (or fingerprint on ``fpr``),
12 key capabilities, 17 curve name.  Dates are seconds since the epoch with
``--fixed-list-mode`` (ISO 8601 basic form is accepted too).  User IDs are
UTF-8 with ``:`` and control octets escaped as ``\\xNN``.

With ``--check-signatures`` each ``uid`` and ``sub`` (and a ``pub``, for
direct-key signatures) is followed by its ``sig`` records: field 2 is the
check result (``!`` good, ``-`` bad, ``?`` no key to check it, ``%`` error),
5 the issuer's key ID, 11 the signature class with ``x``/``l`` appended
(``13x``: a positive certification, ``18x``: a subkey binding) and 13 the
issuer's fingerprint when known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_KEY_RECORDS = {"pub", "sub", "sec", "ssb"}
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class ColonSignature:
    """A ``sig`` record: gpg's check result, the issuer and the signature class."""

    validity: str
    key_id: str
    signature_class: str
    issuer_fingerprint: str

    @property
    def verified(self) -> bool:
        """Whether gpg checked the signature and found it good (``!``)."""
        return self.validity == "!"

    @property
    def class_number(self) -> int:
        """The signature type (RFC 9580 section 5.2.1), ``-1`` when unreadable."""
        digits = self.signature_class[:2]
        return int(digits, 16) if len(digits) == 2 and _HEX.fullmatch(digits) else -1


@dataclass(frozen=True)
class ColonKey:
    """A ``pub``/``sub`` (or ``sec``/``ssb``) record and the fingerprint after it."""

    record: str
    validity: str
    length: int
    algorithm: int
    key_id: str
    created: datetime | None
    expires: datetime | None
    capabilities: str
    curve: str
    fingerprint: str = ""
    signatures: tuple[ColonSignature, ...] = ()

    @property
    def is_secret(self) -> bool:
        """Whether gpg listed this key as having secret material."""
        return self.record in {"sec", "ssb"}


@dataclass(frozen=True)
class ColonUserId:
    """A ``uid`` record: its validity and the user ID string."""

    validity: str
    user_id: str
    signatures: tuple[ColonSignature, ...] = ()


@dataclass(frozen=True)
class ColonListing:
    """One primary key with its subkeys and user IDs, in listing order."""

    primary: ColonKey
    subkeys: tuple[ColonKey, ...] = ()
    user_ids: tuple[ColonUserId, ...] = ()


def parse_date(field: str) -> datetime | None:
    """A colon-listing date (epoch seconds or ``YYYYMMDDTHHMMSS``), ``None`` when empty."""
    if not field:
        return None
    if "T" in field:
        return datetime.strptime(field, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(field), UTC)


def _field(fields: list[bytes], number: int) -> str:
    """Field ``number`` (1-based, as in doc/DETAILS) decoded, ``""`` when absent."""
    if number > len(fields):
        return ""
    return fields[number - 1].decode("utf-8", "replace")


def _key(fields: list[bytes]) -> ColonKey:
    length = _field(fields, 3)
    algorithm = _field(fields, 4)
    return ColonKey(
        record=_field(fields, 1),
        validity=_field(fields, 2),
        length=int(length) if length.isdigit() else 0,
        algorithm=int(algorithm) if algorithm.isdigit() else 0,
        key_id=_field(fields, 5),
        created=parse_date(_field(fields, 6)),
        expires=parse_date(_field(fields, 7)),
        capabilities=_field(fields, 12),
        curve=_field(fields, 17),
    )


def _user_id(fields: list[bytes]) -> ColonUserId:
    raw = fields[9] if len(fields) > 9 else b""
    text = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8", "replace")
    return ColonUserId(validity=_field(fields, 2), user_id=text)


def parse_colon_listing(output: bytes) -> list[ColonListing]:
    """Every primary key in ``output`` with what belongs to it; other records are skipped.

    A ``sig`` record belongs to the ``uid`` or key record it follows.
    """
    listings: list[ColonListing] = []
    last = ""  # the record a following sig belongs to: "pub", "sub" or "uid"
    for line in output.splitlines():
        fields = line.rstrip(b"\r").split(b":")
        record = _field(fields, 1)
        if record in {"pub", "sec"}:
            listings.append(ColonListing(_key(fields)))
            last = "pub"
        elif not listings:
            continue
        elif record in _KEY_RECORDS:
            current = listings[-1]
            listings[-1] = replace(current, subkeys=(*current.subkeys, _key(fields)))
            last = "sub"
        elif record == "uid":
            current = listings[-1]
            listings[-1] = replace(current, user_ids=(*current.user_ids, _user_id(fields)))
            last = "uid"
        elif record == "uat":
            last = ""  # a user attribute's signatures are not a user ID's
        elif record == "fpr":
            listings[-1] = _with_fingerprint(listings[-1], _field(fields, 10))
        elif record == "sig" and last:
            listings[-1] = _with_signature(listings[-1], last, _signature(fields))
    return listings


def _signature(fields: list[bytes]) -> ColonSignature:
    return ColonSignature(
        validity=_field(fields, 2),
        key_id=_field(fields, 5).upper(),
        signature_class=_field(fields, 11),
        issuer_fingerprint=_field(fields, 13).upper(),
    )


def _with_signature(listing: ColonListing, owner: str, signature: ColonSignature) -> ColonListing:
    """Attach ``signature`` to the last record of kind ``owner``."""
    if owner == "uid":
        *rest, uid = listing.user_ids
        uid = replace(uid, signatures=(*uid.signatures, signature))
        return replace(listing, user_ids=(*rest, uid))
    if owner == "sub":
        *others, sub = listing.subkeys
        sub = replace(sub, signatures=(*sub.signatures, signature))
        return replace(listing, subkeys=(*others, sub))
    primary = replace(listing.primary, signatures=(*listing.primary.signatures, signature))
    return replace(listing, primary=primary)


def _with_fingerprint(listing: ColonListing, fingerprint: str) -> ColonListing:
    """Attach ``fingerprint`` to the key record it follows (the last subkey, else the primary)."""
    if listing.subkeys:
        last = listing.subkeys[-1]
        if not last.fingerprint:
            last = replace(last, fingerprint=fingerprint)
        return replace(listing, subkeys=(*listing.subkeys[:-1], last))
    if listing.primary.fingerprint:
        return listing
    return replace(listing, primary=replace(listing.primary, fingerprint=fingerprint))
