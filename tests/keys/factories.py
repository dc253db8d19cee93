"""ValidatedKey values for keystore tests (the keystore stores values; it does not validate).

And the helpers the SQLite and PostgreSQL keystore tests share: concurrent puts, polling.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from transcoder.keys.keystore import KeyStore, KeyStoreBase
from transcoder.keys.model import (
    KeyFormat,
    KeyUsage,
    OpenPgpDetails,
    SmimeDetails,
    ValidatedKey,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = "alice@example.org"
BOB = "bob@example.org"
ENCRYPT_SIGN = frozenset({KeyUsage.ENCRYPT, KeyUsage.SIGN})


def later(minutes: int) -> datetime:
    """``T0`` plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


def key(
    name: str,
    key_format: KeyFormat = KeyFormat.SMIME,
    *,
    usages: frozenset[KeyUsage] = ENCRYPT_SIGN,
    not_after: datetime | None = T0 + timedelta(days=365),
    address: str = ALICE,
) -> ValidatedKey:
    """A distinct key named ``name`` (its fingerprint derives from the name)."""
    fingerprint = hashlib.sha256(name.encode()).hexdigest()
    details: SmimeDetails | OpenPgpDetails
    if key_format is KeyFormat.SMIME:
        details = SmimeDetails(
            issuer=b"0\x00",
            serial_number=2**150 + len(name),
            subject_key_identifier=name.encode(),
            chain=(b"chain-1:" + name.encode(), b"chain-2"),
        )
    else:
        fingerprint = fingerprint[:40]
        details = OpenPgpDetails(encryption_subkeys=(fingerprint[::-1],))
    return ValidatedKey(
        format=key_format,
        fingerprint=fingerprint,
        addresses=(address,),
        not_after=not_after,
        usages=usages,
        material=b"material of " + name.encode(),
        key_algorithm="RSA-3072" if key_format is KeyFormat.SMIME else "Curve25519",
        details=details,
    )


def statuses(store: KeyStore, account: str, now: datetime = T0) -> dict[str, str]:
    """``{fingerprint[:8]: status}`` of every key of ``account``."""
    return {k.fingerprint[:8]: k.status.value for k in store.list_keys(account, now)}


def snapshot(store: KeyStore) -> list[Any]:
    """Everything the store holds, for before/after comparisons."""
    keys = store.list_keys(None, T0)
    policies = [store.get_policy(account, T0) for account in (ALICE, BOB)]
    return [*keys, *policies]


def concurrent_puts(
    stores: Sequence[KeyStoreBase], puts: int, threads: int = 4
) -> list[BaseException]:
    """Put ``puts`` keys for ALICE from each of ``threads`` threads at once; the errors raised.

    Thread ``n`` puts ``key("n-i")`` at ``later(n * 10 + i)`` into ``stores[n % len(stores)]``
    (several stores: several fronts on one database).
    """
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(puts):
                stores[n % len(stores)].put(ALICE, key(f"{n}-{i}"), later(n * 10 + i))
        except BaseException as error:  # reported to the caller
            errors.append(error)

    running = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return errors


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    """Poll ``condition()`` until true (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
