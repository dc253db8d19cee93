"""Values of the key layer: formats, statuses, usages, validated and stored keys, policy.

All values are immutable.  Times are timezone-aware UTC datetimes; a naive
datetime anywhere in this layer is a programming error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class KeyFormat(enum.Enum):
    """The two kinds of user key the server can encrypt to."""

    SMIME = "SMIME"
    OPENPGP = "OPENPGP"


class KeyStatus(enum.Enum):
    """Where a stored key is in its life (docs/design.md, "Protocol: XKEY").

    ``EXPIRED`` is never stored: it is how an ``ACTIVE`` key whose
    ``not_after`` has passed is reported.
    """

    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"
    EXPIRED = "EXPIRED"


class KeyUsage(enum.Enum):
    """What a key may be used for.  The server only ever encrypts to ``ENCRYPT`` keys."""

    ENCRYPT = "ENCRYPT"
    SIGN = "SIGN"


class PolicyMode(enum.Enum):
    """Whether FETCH transcodes: every message (``ALWAYS``) or none (``OFF``)."""

    ALWAYS = "ALWAYS"
    OFF = "OFF"


@dataclass(frozen=True)
class SmimeDetails:
    """What the S/MIME transcoder needs besides the certificate itself.

    ``issuer`` (DER of the issuer Name) and ``serial_number`` form the CMS
    IssuerAndSerialNumber; ``subject_key_identifier`` the alternative
    RecipientIdentifier (RFC 5652 section 6.2.1).  ``chain`` holds the DER of
    the certificates that came with the end entity, in the order given.
    """

    issuer: bytes
    serial_number: int
    subject_key_identifier: bytes | None = None
    chain: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class OpenPgpDetails:
    """What the PGP/MIME transcoder needs besides the key itself.

    ``encryption_subkeys`` are the fingerprints (lowercase hex) of the keys,
    primary or sub, that passed validation for encryption, newest first; the
    transcoder encrypts to the first with ``gpg -r <fpr>!`` so that gpg cannot
    pick a weaker or later-added one on its own.
    """

    encryption_subkeys: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ValidatedKey:
    """Key material that passed validation for one account; ready to be stored.

    ``fingerprint`` is lowercase hex: SHA-256 of the certificate's DER for
    S/MIME, the primary key fingerprint for OpenPGP.  ``material`` is what the
    transcoder loads: the end-entity certificate's DER, or the binary minimal
    export of the OpenPGP key (``--export-options export-minimal``).
    ``not_after`` is when the key stops being usable for encryption (``None``:
    never).  ``key_algorithm`` names the encryption key, e.g. ``RSA-3072``,
    ``EC-P256``, ``Curve25519``.
    """

    format: KeyFormat
    fingerprint: str
    addresses: tuple[str, ...]
    not_after: datetime | None
    usages: frozenset[KeyUsage]
    material: bytes
    key_algorithm: str
    details: SmimeDetails | OpenPgpDetails

    def __post_init__(self) -> None:
        if self.not_after is not None and self.not_after.tzinfo is None:
            raise ValueError("not_after must be timezone-aware")

    @property
    def can_encrypt(self) -> bool:
        """Whether the server may encrypt to this key."""
        return KeyUsage.ENCRYPT in self.usages

    def expired_at(self, now: datetime) -> bool:
        """Whether the key is past its ``not_after`` at ``now``.

        ``not_after`` itself is still valid (RFC 5280 section 4.1.2.5: the
        validity period is inclusive).
        """
        return self.not_after is not None and self.not_after < now


@dataclass(frozen=True, kw_only=True)
class StoredKey(ValidatedKey):
    """A key in the keystore, as reported at one moment.

    ``status`` is computed for that moment: a stored ``ACTIVE`` key past its
    ``not_after`` is reported ``EXPIRED``.  ``created_at`` is when the key was
    first stored, ``activated_at`` when it last became ``ACTIVE`` (storing
    the same fingerprint again re-activates it), ``retired_at`` when it was
    retired (``None`` while active).
    """

    account: str
    status: KeyStatus
    created_at: datetime
    activated_at: datetime
    retired_at: datetime | None = None


@dataclass(frozen=True)
class Policy:
    """An account's transcoding policy.

    ``format`` is the effective format: the one set explicitly, else the
    format of the account's most recently activated usable key, else
    ``None``.  ``format_is_explicit`` says which.  ``sign`` is the account's
    own ``SIGN`` setting (issue 16: views signed by the server's signing
    key), ``None`` when never set: the server's default (``--sign-views``)
    applies, see :meth:`signs`.
    """

    mode: PolicyMode = PolicyMode.OFF
    format: KeyFormat | None = None
    format_is_explicit: bool = False
    sign: bool | None = None

    def signs(self, default: bool) -> bool:
        """Whether views are signed, the server's default being ``default``."""
        return default if self.sign is None else self.sign


def require_aware(moment: datetime, what: str = "now") -> datetime:
    """``moment`` in UTC; ValueError when it is naive (a programming error, not bad input)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def normalize_fingerprint(fingerprint: str) -> str:
    """Lowercase hex without spaces or colons, the form fingerprints are stored and compared in."""
    return fingerprint.strip().lower().replace(" ", "").replace(":", "")


def format_date(moment: datetime) -> str:
    """``YYYY-MM-DD`` of ``moment`` in UTC, as used in messages to the client."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def format_timestamp(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of ``moment`` in UTC (the XKEY ``NOT-AFTER`` form)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
