"""Provisioning a key: validate it for an account, audit a refusal, store it.

:func:`provision` is the one code path behind ``XKEY PUT``
(:mod:`transcoder.imap.xkey`) and ``transcoder-admin key import``, so a key
the server would refuse cannot enter the keystore through the back door.

Order of work, and why:

1. :func:`~transcoder.keys.validate.validate_key` -- size first, then format,
   validity, strength and address.  A refusal (any
   :class:`~transcoder.errors.ClientError`) is audited with
   :meth:`IKeyStore.record_refusal` and raised again; nothing is stored.
2. :meth:`IKeyStore.put` -- one transaction, which audits the key stored and
   any older key it superseded.
3. :func:`provision_key` reports what the put superseded (keys of the same
   format and role that were in force and are now ``RETIRED``), so that
   ``XKEY PUT`` and ``transcoder-admin key import`` can say so: a user who
   uploads a test certificate must learn that it retired their real one.

The refusal record names the material's SHA-256 (``material_sha256``) and,
for an X.509 certificate that parses at all, its fingerprint -- the same
SHA-256 of the DER the keystore would have used -- so an operator can tell
which certificate a client kept sending.  Server-side failures (gpg missing,
the database unavailable) are not refusals and are not audited as such.

Blocking (gpg subprocesses, SQLite): call it off the reactor thread, e.g.
through :meth:`AsyncKeyStore.run <transcoder.keys.async_store.AsyncKeyStore.run>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from transcoder.errors import ClientError
from transcoder.keys.errors import MAX_KEY_BYTES
from transcoder.keys.keystore import KeyStoreBase as KeyStore
from transcoder.keys.model import KeyFormat, KeyStatus, StoredKey
from transcoder.keys.validate import sniff_format, validate_key


@dataclass(frozen=True)
class Provisioned:
    """What one provisioning did: the key stored, and the keys it superseded.

    ``superseded`` holds, oldest first, the account's keys that were in force
    (stored ``ACTIVE``, expired ones included) before and were retired by
    this put because the new key took their format and role; empty when the
    key was the first of its kind or a refresh of the key in force.
    """

    stored: StoredKey
    superseded: tuple[StoredKey, ...] = ()


def provision(
    store: KeyStore,
    account: str,
    data: bytes,
    now: datetime,
    *,
    trust_anchors: Sequence[x509.Certificate] = (),
    gpg_binary: str = "gpg",
    max_bytes: int = MAX_KEY_BYTES,
    origin: Mapping[str, str] | None = None,
) -> StoredKey:
    """Validate ``data`` as ``account``'s key at ``now`` and store it; return the stored key.

    Raises the validation's :class:`~transcoder.errors.ClientError`
    (``KeyTooBig``, ``KeyInvalid``, ``KeyAddressMismatch``) after auditing it;
    the keystore is unchanged then.  ``store`` is typed as :class:`KeyStore`
    for mypy; any :class:`~transcoder.keys.interfaces.IKeyStore` works.
    """
    return provision_key(
        store,
        account,
        data,
        now,
        trust_anchors=trust_anchors,
        gpg_binary=gpg_binary,
        max_bytes=max_bytes,
        origin=origin,
    ).stored


def provision_key(
    store: KeyStore,
    account: str,
    data: bytes,
    now: datetime,
    *,
    trust_anchors: Sequence[x509.Certificate] = (),
    gpg_binary: str = "gpg",
    max_bytes: int = MAX_KEY_BYTES,
    origin: Mapping[str, str] | None = None,
) -> Provisioned:
    """As :func:`provision`, and also report the keys the new one superseded.

    Superseded keys are those in force before the put (``retired_at`` unset)
    and retired at ``now`` after it: the put retires them in its own
    transaction (:meth:`KeyStore.put`), the two reads around it only find
    them again.
    """
    try:
        key = validate_key(
            data,
            account,
            now,
            trust_anchors=trust_anchors,
            gpg_binary=gpg_binary,
            max_bytes=max_bytes,
        )
    except ClientError as error:
        store.record_refusal(
            account,
            error,
            now,
            fingerprint=refused_fingerprint(data, max_bytes),
            origin={**(origin or {}), "material_sha256": hashlib.sha256(data).hexdigest()},
        )
        raise
    in_force = {k.fingerprint for k in store.list_keys(account, now) if k.retired_at is None}
    stored = store.put(account, key, now, origin)
    superseded = tuple(
        k
        for k in store.list_keys(account, now)
        if k.fingerprint in in_force
        and k.fingerprint != stored.fingerprint
        and k.status is KeyStatus.RETIRED
        and k.retired_at == stored.activated_at
    )
    return Provisioned(stored, superseded)


def refused_fingerprint(data: bytes, max_bytes: int = MAX_KEY_BYTES) -> str | None:
    """The fingerprint to audit a refused key under, when one can be told cheaply.

    For X.509 material that parses (DER, or the first PEM certificate): the
    SHA-256 of the certificate's DER, as the keystore would store it.  For
    OpenPGP (telling needs gpg), oversized or unparsable data: ``None``.
    """
    if len(data) > max_bytes:
        return None
    try:
        if sniff_format(data) is not KeyFormat.SMIME:
            return None
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificates(data)[0]
        else:
            cert = x509.load_der_x509_certificate(data)
        return cert.fingerprint(hashes.SHA256()).hex()
    except (ClientError, ValueError, IndexError):
        return None
