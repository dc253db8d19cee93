"""Validation of a user's OpenPGP public key for PGP/MIME encryption (RFC 9580, RFC 3156).

Accepted input: one transferable public key, armored or binary, at most
:data:`~transcoder.keys.errors.MAX_KEY_BYTES`.  Steps:

1. :func:`~transcoder.keys.openpgp_packets.check_public_key_data` screens the
   packets without gpg: secret key packets, foreign packets, text around the
   armor and more than one primary key are refused before anything is
   imported, and it notes what was sent -- the fingerprints of the primary
   key and subkeys computed from the packets, and the user IDs.
2. gpg imports exactly those packets (de-armored) into an isolated temporary
   home (:mod:`transcoder.keys.openpgp_gpg`).  It checks every
   self-signature, binding and revocation and silently drops the user IDs
   and subkeys whose signatures do not verify, keeping the rest; we read
   its ``--check-signatures`` colon listing of what is left.
3. :func:`check_kept` compares that with what was sent: the key gpg holds
   must have the fingerprint of the primary key packet sent (gpg re-encodes
   some fields, so a malformed packet can come out as another key), every
   subkey too, and no user ID naming the account and no encryption-capable
   subkey may have been dropped.
4. :func:`evaluate_listing` applies our rules: the primary key is valid, not
   revoked, not expired and strong; a valid user ID carries the account's
   address (:func:`~transcoder.keys.addresses.address_matches`) and a
   self-signature gpg verified (``sig:!``, class 0x10-0x13, by the primary
   key); at least one key (primary or sub) with encryption capability is
   valid, unrevoked, unexpired, strong and, if a subkey, bound by a
   verified binding signature (class 0x18).
5. The stored material is gpg's minimal export of the key, read back by
   the screen: it must be the same primary key with the same encryption
   subkeys.

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
from transcoder.keys.openpgp_colons import (
    ColonKey,
    ColonListing,
    ColonSignature,
    ColonUserId,
    parse_colon_listing,
)
from transcoder.keys.openpgp_gpg import (
    check_signatures,
    export_minimal,
    import_one_key,
    isolated_gpg,
)
from transcoder.keys.openpgp_packets import SECRET_MESSAGE, SubmittedKey, check_public_key_data

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

#: Signature types (RFC 9580 section 5.2.1): certifications of a user ID, subkey binding.
CERTIFICATION_CLASSES = range(0x10, 0x14)
SUBKEY_BINDING_CLASS = 0x18


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
    submitted = check_public_key_data(data)
    with isolated_gpg(gpg_binary, scratch_dir) as gpg:
        fingerprint = import_one_key(gpg, submitted.binary)
        listings = parse_colon_listing(check_signatures(gpg, fingerprint))
        if len(listings) != 1:
            raise KeyInvalid(f"{len(listings)} primary keys; send exactly one")
        check_kept(listings[0], submitted, account)
        evaluation = evaluate_listing(listings[0], account, now)
        material = export_minimal(gpg, fingerprint)
    check_stored(material, submitted, evaluation)
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
            if uid.validity not in _UNUSABLE
            and self_certified(uid, primary)
            and (address := user_id_address(uid.user_id))
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
        reason = unusable_reason(key, now) or weakness(key) or unbound(key, listing.primary)
        if reason:
            reasons.append(f"subkey {key.key_id} {reason}")
        else:
            usable.append(key)
    if not usable:
        raise KeyInvalid(printable(f"no usable encryption key: {reasons[-1]}", 160))
    return sorted(usable, key=lambda k: k.created.timestamp() if k.created else 0, reverse=True)


def issued_by(signature: ColonSignature, primary: ColonKey) -> bool:
    """Whether ``signature`` was made by ``primary`` (by fingerprint, else by key ID)."""
    if signature.issuer_fingerprint:
        return signature.issuer_fingerprint == primary.fingerprint.upper()
    return bool(signature.key_id) and signature.key_id == primary.key_id.upper()


def self_certified(uid: ColonUserId, primary: ColonKey) -> bool:
    """Whether gpg verified a certification of ``uid`` by the primary key itself."""
    return any(
        sig.verified and sig.class_number in CERTIFICATION_CLASSES and issued_by(sig, primary)
        for sig in uid.signatures
    )


def unbound(key: ColonKey, primary: ColonKey) -> str | None:
    """Why subkey ``key`` does not belong to ``primary``, or ``None`` (or the primary itself)."""
    if key is primary:
        return None
    if any(
        sig.verified and sig.class_number == SUBKEY_BINDING_CLASS and issued_by(sig, primary)
        for sig in key.signatures
    ):
        return None
    return "has no valid binding signature"


def check_kept(listing: ColonListing, submitted: SubmittedKey, account: str) -> None:
    """KeyInvalid when gpg did not keep, unchanged, what matters of the key sent.

    The primary key and every subkey gpg kept must carry the fingerprints
    of packets sent; no user ID naming ``account`` and no subkey able to
    encrypt may have lost its (verified) self-signature or binding.
    """
    if listing.primary.fingerprint.upper() != submitted.fingerprint:
        raise KeyInvalid("malformed primary key packet: gpg reads it as another key")
    sent = {subkey.fingerprint for subkey in submitted.subkeys}
    if any(key.fingerprint.upper() not in sent for key in listing.subkeys):
        raise KeyInvalid("malformed subkey packet: gpg reads it as another key")
    bound = {k.fingerprint.upper() for k in listing.subkeys if not unbound(k, listing.primary)}
    for subkey in submitted.subkeys:
        if subkey.can_encrypt and subkey.fingerprint not in bound:
            raise KeyInvalid(f"subkey {subkey.fingerprint[-16:]} has no valid binding signature")
    certified = {uid.user_id for uid in listing.user_ids if self_certified(uid, listing.primary)}
    for user_id in submitted.user_ids:
        address = user_id_address(user_id)
        if address and address_matches(address, account) and user_id not in certified:
            raise KeyInvalid(printable(f"user ID {user_id} has no valid self-signature", 160))


def check_stored(material: bytes, submitted: SubmittedKey, evaluation: Evaluation) -> None:
    """KeyInvalid unless gpg's export is the key sent, with the encryption keys chosen."""
    stored = check_public_key_data(material)
    keys = {stored.fingerprint, *(subkey.fingerprint for subkey in stored.subkeys)}
    chosen = {fingerprint.upper() for fingerprint in evaluation.encryption_subkeys}
    if stored.fingerprint != submitted.fingerprint or not chosen <= keys:
        raise KeyInvalid("gpg would store another key than the one sent")


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
