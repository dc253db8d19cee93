"""Validation of a user's OpenPGP public key for PGP/MIME encryption (RFC 9580, RFC 3156).

Accepted input: one transferable public key, armored or binary, at most
:data:`~transcoder.keys.errors.MAX_KEY_BYTES`.  Steps:

1. :func:`~transcoder.keys.openpgp_packets.check_public_key_data` screens the
   packets without gpg: secret key packets, foreign packets and more than one
   primary key are refused before anything is imported.
2. gpg imports the key into an isolated temporary home
   (:mod:`transcoder.keys.openpgp_gpg`), which checks every self-signature,
   binding and revocation; we read its colon listing.
3. :func:`evaluate_listing` applies our rules: the primary key is valid, not
   revoked, not expired and strong; a valid user ID carries the account's
   address (:func:`~transcoder.keys.addresses.address_matches`); at least
   one key (primary or sub) with encryption capability is valid, unrevoked,
   unexpired and strong.
4. The stored material is gpg's minimal export of the key.

Strong means RSA of at least 2048 bits, Curve25519 (``cv25519`` /
``ed25519``) or NIST P-256/P-384/P-521.  Brainpool curves, secp256k1,
X448/Ed448, DSA and ElGamal are refused: the first three are not in the
issue's list and the last two are legacy (RFC 9580 section 9.1 marks them
deprecated / MUST NOT generate).

gpg judges revocation and expiry at the real time; we additionally judge
expiry against the injected ``now``, so a key counts as expired when either
says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from transcoder.keys.addresses import address_matches, unique, user_id_address
from transcoder.keys.errors import (
    MAX_KEY_BYTES,
    KeyAddressMismatch,
    KeyInvalid,
    check_key_size,
    printable,
)
from transcoder.keys.model import (
    KeyFormat,
    KeyUsage,
    OpenPgpDetails,
    ValidatedKey,
    format_date,
    require_aware,
)
from transcoder.keys.openpgp_colons import ColonKey, ColonListing, parse_colon_listing
from transcoder.keys.openpgp_gpg import export_minimal, import_one_key, isolated_gpg, list_key
from transcoder.keys.openpgp_packets import SECRET_MESSAGE, check_public_key_data

MIN_RSA_BITS = 2048

#: RFC 9580 section 9.1 algorithm IDs.
RSA_ALGORITHMS = frozenset({1, 2, 3})
ECC_ALGORITHMS = frozenset({18, 19, 22, 25, 27})
_LEGACY_NAMES = {16: "ElGamal", 17: "DSA", 20: "ElGamal", 26: "X448", 28: "Ed448"}

#: gpg's curve names (field 17) accepted, and how we name them.
CURVES = {
    "cv25519": "Curve25519",
    "ed25519": "Curve25519",
    "x25519": "Curve25519",
    "curve25519": "Curve25519",
    "nistp256": "EC-P256",
    "nistp384": "EC-P384",
    "nistp521": "EC-P521",
}

_WANTED = "RSA of at least 2048 bits, Curve25519 or NIST P-256/P-384/P-521 required"

#: Validity letters (doc/DETAILS field 2) that make a key or user ID unusable.
_UNUSABLE = {"r": "revoked", "e": "expired", "i": "invalid", "d": "disabled", "n": "not valid"}


def validate_openpgp_key(
    data: bytes,
    account: str,
    now: datetime,
    gpg_binary: str = "gpg",
    *,
    max_bytes: int = MAX_KEY_BYTES,
    scratch_dir: str | Path | None = None,
) -> ValidatedKey:
    """Validate ``data`` as the OpenPGP public key of ``account`` at ``now``.

    Raises :class:`KeyTooBig`, :class:`KeyInvalid` or :class:`KeyAddressMismatch`
    for bad keys; :class:`~transcoder.errors.ConfigurationError` when gpg
    cannot be run.  Blocks on gpg subprocesses.  gpg's temporary home is
    made under ``scratch_dir`` (default: the system temporary directory).
    """
    check_key_size(data, max_bytes)
    now = require_aware(now)
    check_public_key_data(data)
    with isolated_gpg(gpg_binary, scratch_dir) as gpg:
        fingerprint = import_one_key(gpg, data)
        listings = parse_colon_listing(list_key(gpg, fingerprint))
        if len(listings) != 1:
            raise KeyInvalid(f"{len(listings)} primary keys; send exactly one")
        evaluation = evaluate_listing(listings[0], account, now)
        material = export_minimal(gpg, fingerprint)
    return ValidatedKey(
        format=KeyFormat.OPENPGP,
        fingerprint=fingerprint.lower(),
        addresses=evaluation.addresses,
        not_after=evaluation.not_after,
        usages=evaluation.usages,
        material=material,
        key_algorithm=evaluation.key_algorithm,
        details=OpenPgpDetails(encryption_subkeys=evaluation.encryption_subkeys),
    )


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_listing` concluded about one key."""

    addresses: tuple[str, ...]
    not_after: datetime | None
    usages: frozenset[KeyUsage]
    key_algorithm: str
    encryption_subkeys: tuple[str, ...]


def evaluate_listing(listing: ColonListing, account: str, now: datetime) -> Evaluation:
    """Apply the rules of the module docstring to gpg's listing of one key."""
    primary = listing.primary
    if primary.is_secret or any(key.is_secret for key in listing.subkeys):
        raise KeyInvalid(SECRET_MESSAGE)
    reason = unusable_reason(primary, now) or weakness(primary)
    if reason:
        raise KeyInvalid(printable(f"primary key {reason}", 160))
    addresses = unique(
        [
            address
            for uid in listing.user_ids
            if uid.validity not in _UNUSABLE and (address := user_id_address(uid.user_id))
        ]
    )
    if not any(address_matches(address, account) for address in addresses):
        raise KeyAddressMismatch(printable(f"no user ID for {account}", 120))
    encrypting = encryption_keys(listing, now)
    signing = [k for k in (primary, *listing.subkeys) if "s" in k.capabilities]
    usages = {KeyUsage.ENCRYPT}
    if any(not unusable_reason(k, now) and not weakness(k) for k in signing):
        usages.add(KeyUsage.SIGN)
    return Evaluation(
        addresses=addresses,
        not_after=usable_until(primary, encrypting),
        usages=frozenset(usages),
        key_algorithm=algorithm_name(encrypting[0]),
        encryption_subkeys=tuple(key.fingerprint.lower() for key in encrypting),
    )


def encryption_keys(listing: ColonListing, now: datetime) -> list[ColonKey]:
    """The usable encryption-capable keys, newest first; KeyInvalid when there are none."""
    candidates = [k for k in (listing.primary, *listing.subkeys) if "e" in k.capabilities]
    if not candidates:
        raise KeyInvalid("no key with encryption capability")
    usable: list[ColonKey] = []
    reasons: list[str] = []
    for key in candidates:
        reason = unusable_reason(key, now) or weakness(key)
        if reason:
            reasons.append(f"subkey {key.key_id} {reason}")
        else:
            usable.append(key)
    if not usable:
        raise KeyInvalid(printable(f"no usable encryption key: {reasons[-1]}", 160))
    return sorted(usable, key=lambda k: k.created.timestamp() if k.created else 0, reverse=True)


def unusable_reason(key: ColonKey, now: datetime) -> str | None:
    """Why gpg's validity or the expiry at ``now`` makes ``key`` unusable, or ``None``."""
    if key.validity == "e" or (key.expires is not None and key.expires < now):
        return f"expired on {format_date(key.expires)}" if key.expires else "expired"
    return _UNUSABLE.get(key.validity)


def weakness(key: ColonKey) -> str | None:
    """Why ``key``'s algorithm or size is not accepted, or ``None`` when it is."""
    if key.algorithm in RSA_ALGORITHMS:
        if key.length < MIN_RSA_BITS:
            return f"is RSA of {key.length} bits; at least {MIN_RSA_BITS} required"
        return None
    if key.algorithm in ECC_ALGORITHMS and key.curve.lower() in CURVES:
        return None
    kind = key.curve or _LEGACY_NAMES.get(key.algorithm, f"algorithm {key.algorithm}")
    return f"uses {kind}; {_WANTED}"


def algorithm_name(key: ColonKey) -> str:
    """Our name for an accepted key's algorithm: ``RSA-3072``, ``Curve25519``, ``EC-P256``."""
    if key.algorithm in RSA_ALGORITHMS:
        return f"RSA-{key.length}"
    return CURVES[key.curve.lower()]


def usable_until(primary: ColonKey, encrypting: list[ColonKey]) -> datetime | None:
    """When the key stops being usable for encryption: the primary's expiry, or the
    latest expiry among the usable encryption keys if sooner; ``None`` for never."""
    sub_end: datetime | None = None
    if all(key.expires is not None for key in encrypting):
        sub_end = max(key.expires for key in encrypting if key.expires is not None)
    ends = [end for end in (primary.expires, sub_end) if end is not None]
    return min(ends) if ends else None
