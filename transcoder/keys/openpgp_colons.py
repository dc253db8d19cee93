"""Parse gpg's machine-readable key listing (``--with-colons --fixed-list-mode``).

Field numbers follow GnuPG's doc/DETAILS ("Format of the colon listings"):
1 record type, 2 validity, 3 key length, 4 public key algorithm, 5 key ID,
6 creation date, 7 expiration date, 10 user ID (or fingerprint on ``fpr``),
12 key capabilities, 17 curve name.  Dates are seconds since the epoch with
``--fixed-list-mode`` (ISO 8601 basic form is accepted too).  User IDs are
UTF-8 with ``:`` and control octets escaped as ``\\xNN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")
_KEY_RECORDS = {"pub", "sub", "sec", "ssb"}


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

    @property
    def is_secret(self) -> bool:
        """Whether gpg listed this key as having secret material."""
        return self.record in {"sec", "ssb"}


@dataclass(frozen=True)
class ColonUserId:
    """A ``uid`` record: its validity and the user ID string."""

    validity: str
    user_id: str


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
    """Every primary key in ``output`` with what belongs to it; other records are skipped."""
    listings: list[ColonListing] = []
    for line in output.splitlines():
        fields = line.rstrip(b"\r").split(b":")
        record = _field(fields, 1)
        if record in {"pub", "sec"}:
            listings.append(ColonListing(_key(fields)))
        elif not listings:
            continue
        elif record in _KEY_RECORDS:
            current = listings[-1]
            listings[-1] = replace(current, subkeys=(*current.subkeys, _key(fields)))
        elif record == "uid":
            current = listings[-1]
            listings[-1] = replace(current, user_ids=(*current.user_ids, _user_id(fields)))
        elif record == "fpr":
            listings[-1] = _with_fingerprint(listings[-1], _field(fields, 10))
    return listings


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
