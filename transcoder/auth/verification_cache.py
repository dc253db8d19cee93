"""A bounded, short-lived memory of successful password verifications (Dovecot's auth cache).

Every LOGIN runs scrypt against the accounts file (about 90-300 ms of CPU
here, by design: it is what makes a stolen accounts file expensive to
guess).  A mail client logs in again and again -- one connection per
mailbox, reconnects after every sleep -- so the server spends most of a
busy minute re-proving passwords it proved seconds ago.
:class:`VerificationCache` remembers, for ``ttl`` seconds, that a given
(account, password) pair verified, so the next LOGIN with the same pair
skips scrypt.  The checker (:mod:`transcoder.auth.checker`) consults it;
the login throttle above the checker is unaffected.

What is kept, and when it goes
------------------------------
* Only ``HMAC-SHA256(key, address NUL password)``, with a random ``key``
  the service draws at start (never written anywhere): no password, no
  address, no hash of the password alone.  The key is injected, so tests
  choose it.
* Only successes.  A wrong password is never cached; it always costs a full
  scrypt, so guessing speed is unchanged.
* Each entry lives at most ``ttl`` seconds from its verification (a use does
  not extend it); an expired entry is removed by a timer on the injected
  clock even when nobody logs in.  At most ``max_entries`` are held, the
  least recently used going first.
* The whole cache is dropped when the accounts file changes on disk
  (:meth:`AccountsFile.generation`): a password changed or an account
  removed with ``transcoder-admin`` refuses the old password at the next
  LOGIN.  A verification that was running while the file changed is not
  cached.

The trade-off, honestly
-----------------------
scrypt protects passwords *at rest*: someone who copies the accounts file
must spend ~16 MiB and tens of milliseconds per guess.  The cache adds, in
the server's memory only, fast-hash evidence of recently used passwords.
Whoever can read the process memory (a core dump, swap, a memory-disclosure
bug, root) gets the key and the HMACs, and can then test guesses for each
cached account at HMAC speed (billions a second on a GPU) instead of scrypt
speed -- i.e. learn a password that was valid within the last ``ttl``
seconds, if it is guessable at all.  The same attacker could as well read
passwords as they arrive in LOGIN commands, or the TLS keys, so the
marginal loss is small; but it is not zero, and Python cannot wipe freed
memory, so an evicted entry's bytes may linger until reused.  Operators who
do not accept that set ``--auth-cache-ttl 0`` and pay scrypt on every LOGIN.

Runs on the reactor thread only (no locking).  No I/O of its own: the
accounts file's generation is read through the injected callable.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: How long a verification is remembered, in seconds (``--auth-cache-ttl``).
DEFAULT_TTL = 300.0
#: Most entries kept (about 250 bytes each).
DEFAULT_MAX_ENTRIES = 10_000
#: Shortest key accepted: HMAC-SHA256 keys below 128 bits are guessable.
MIN_KEY_BYTES = 16


class VerificationCache:
    """Remembers successful (address, password) verifications for ``ttl`` seconds.

    ``key`` is the HMAC key (at least 16 random bytes, drawn once per
    process); ``clock`` provides ``seconds`` and ``callLater``;
    ``generation`` is the accounts file's :meth:`AccountsFile.generation`.
    Addresses are the normalised ones, passwords the octets as received.
    """

    def __init__(
        self,
        key: bytes,
        clock: IReactorTime,
        generation: Callable[[], int],
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the cache key needs at least {MIN_KEY_BYTES} random bytes")
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl and max_entries must be positive")
        self._key = key
        self._clock = clock
        self._generation_of_accounts = generation
        self.ttl = ttl
        self.max_entries = max_entries
        #: digest -> expiry, least recently used first (eviction order).
        self._recency: OrderedDict[bytes, float] = OrderedDict()
        #: digest -> expiry, oldest verification first (expiry order: the TTL is fixed).
        self._expiry: OrderedDict[bytes, float] = OrderedDict()
        self._generation: int | None = None
        self._sweep: IDelayedCall | None = None

    def __len__(self) -> int:
        """How many verifications are remembered now."""
        return len(self._expiry)

    def sync(self) -> int:
        """The accounts file's generation now; everything is forgotten if it moved."""
        generation = self._generation_of_accounts()
        if generation != self._generation:
            self._forget_all()
            self._generation = generation
        return generation

    def holds(self, address: str, password: bytes) -> bool:
        """Whether ``password`` verified for ``address`` less than ``ttl`` ago.

        Call :meth:`sync` first: it drops what a changed accounts file voids.
        """
        digest = self._digest(address, password)
        expiry = self._expiry.get(digest)
        if expiry is None:
            return False
        if self._clock.seconds() >= expiry:
            self._drop(digest)
            return False
        self._recency.move_to_end(digest)
        return True

    def remember(self, generation: int, address: str, password: bytes) -> None:
        """Record a successful verification made under accounts ``generation`` (from :meth:`sync`).

        Nothing is recorded if the accounts file has changed since.
        """
        if self.sync() != generation:
            return
        digest = self._digest(address, password)
        self._drop(digest)
        expiry = self._clock.seconds() + self.ttl
        self._recency[digest] = self._expiry[digest] = expiry
        while len(self._recency) > self.max_entries:
            self._drop(next(iter(self._recency)))
        if self._sweep is None:
            self._schedule_sweep()

    def _digest(self, address: str, password: bytes) -> bytes:
        # A normalised address holds no NUL (transcoder.auth.accounts), so the
        # message splits one way only.
        message = address.encode("utf-8") + b"\0" + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _drop(self, digest: bytes) -> None:
        self._recency.pop(digest, None)
        self._expiry.pop(digest, None)

    def _forget_all(self) -> None:
        self._recency.clear()
        self._expiry.clear()
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None

    def _schedule_sweep(self) -> None:
        """Wake up when the oldest entry expires (none: no timer)."""
        self._sweep = None
        if self._expiry:
            first = next(iter(self._expiry.values()))
            delay = max(0.0, first - self._clock.seconds())
            self._sweep = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        """Remove every expired entry, then wait for the next expiry."""
        now = self._clock.seconds()
        while self._expiry:
            digest, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            self._drop(digest)
        self._schedule_sweep()


__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_TTL", "VerificationCache"]
