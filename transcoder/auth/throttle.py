"""The failed-login throttle: per client address and per account, across connections.

Sans-IO: no sockets, no reactor; the caller passes the time in (``now``, in
seconds) and runs the credential checks this machine lets through.  The
Twisted side is :mod:`transcoder.imap.login_gate`.

Keys.  Every login attempt has two keys: its client address
(:func:`address_key`: the IP address; an IPv6 address counts as its /64,
which one subscriber usually holds whole) and its account (:func:`account_key`:
the login lowercased, as the accounts file compares them).  Failures are
counted per key, whichever connection they came over.

Rules (one attempt = one credential check):

* A key without recent failures admits up to ``parallel_checks`` checks at once.
* A key that failed recently, now with ``n`` failures on record, admits one
  check at a time, and not before
  ``delay(n) = min(first_delay * 2**(n-1), max_delay)`` seconds after its last
  failure (Dovecot's auth penalty grows the same way).  Parallel attempts are
  therefore *serialised*: each waits for the previous one's outcome and the
  delay after it, and its credential check -- not only its answer -- runs
  then.  A correct password waits its turn like a wrong one, so guessing over
  many connections gains nothing, and the answer's timing tells nothing.
* An attempt runs when every key it is gated by admits it; waiting attempts
  run oldest first.  A key that failed recently and does not admit an attempt now
  and already has ``max_waiting`` attempts waiting refuses the new one
  (:class:`ThrottleBusy`) without a check, and when a key fails while more
  wait on it, the youngest beyond ``max_waiting`` are refused
  (:meth:`LoginThrottle.shed`); so no attempt waits longer than about
  ``max_waiting * max_delay`` seconds.  (Without failures any number may
  queue for the ``parallel_checks``: a busy NAT logging in is not refused.)
  Waiting attempts hold no more memory than the connections they belong to.
* A key's failures are forgotten ``forget_after`` seconds after its last one:
  it is no longer "recently failed".

What a success resets.  A successful login clears its *account's* failure
count: the owner who mistyped a few times then logs in from other
connections without a growing delay.  The account stays "recently failed",
one check at a time, until its failures are forgotten, so an attack that
goes on gets no parallel burst from the owner's login, only delays that grow
from 1 s again.  It does **not** clear the *address's* failures: an
attacker who owns one account (a mailbox at the same hoster, say) could
otherwise log into it between guesses at other accounts and wipe the
address's record each time.  The address's failures decay instead.

Not locking the real user out.  No failure count ever refuses a check: the
delay is capped at ``max_delay``, and a busy refusal lasts only while others
keep a key saturated.  A successful login also marks its (address, account)
pair as trusted for ``trust_for`` seconds: attempts from that pair are gated
by the address alone, so an account under attack from elsewhere stays open
to its owner at the addresses they use (the address gate still applies).

Memory is bounded: at most ``max_keys`` keys and ``trusted_pairs`` pairs are
kept, least recently used evicted first; keys that have not failed recently
are dropped as soon as no attempt uses them.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottlePolicy:
    """The throttle's tunables (seconds, counts)."""

    #: Delay after the first failure; doubling per further failure.
    first_delay: float = 1.0
    #: Cap of the delay (Dovecot's auth penalty stops at 15 s too).
    max_delay: float = 15.0
    #: A key's failures are forgotten this long after its last one.
    forget_after: float = 15 * 60.0
    #: Concurrent checks a key without recent failures admits.
    parallel_checks: int = 8
    #: Attempts that may wait on a key that does not admit them now.
    max_waiting: int = 4
    #: Keys tracked at most (least recently used evicted first).
    max_keys: int = 65536
    #: (address, account) pairs remembered after a successful login, at most.
    trusted_pairs: int = 65536
    #: How long a successful login trusts its (address, account) pair.
    trust_for: float = 30 * 24 * 3600.0
    #: IPv6 addresses are grouped into networks of this prefix length.
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("need 0 < first_delay <= max_delay")
        if self.forget_after <= self.max_delay:
            raise ValueError("forget_after must exceed max_delay")
        if min(self.parallel_checks, self.max_waiting, self.max_keys, self.trusted_pairs) < 1:
            raise ValueError("counts must be positive")
        if not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0..128")

    def delay(self, failures: int) -> float:
        """Seconds a key with ``failures`` failures stays closed after its last one."""
        if failures <= 0:
            return 0.0
        return min(self.first_delay * 2.0 ** min(failures - 1, 62), self.max_delay)


class ThrottleBusy(Exception):
    """Too many attempts already wait on a key: this one is refused without a check."""


def address_key(host: str, ipv6_prefix: int = 64) -> str:
    """The key of a client address: the IP (IPv4-mapped IPv6 as IPv4), IPv6 as its network."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "peer:" + host[:100]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address):
        return f"ip:{ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)}"
    return f"ip:{ip}"


def account_key(login: str) -> str:
    """The key of an account: the login lowercased as a whole (as the accounts file compares)."""
    return "account:" + login[:320].lower()


@dataclass(eq=False)
class Attempt:
    """One login attempt: its keys, the keys that gate it, and whether its check runs."""

    address: str
    account: str
    gates: tuple[str, ...]
    running: bool = False


@dataclass
class _KeyState:
    failures: int = 0
    #: When it last failed; None: not recently (never, or forgotten).
    last_failure: float | None = None
    last_used: float = 0.0
    running: int = 0
    waiting: int = 0

    def idle(self) -> bool:
        return self.running == 0 and self.waiting == 0


class LoginThrottle:
    """The throttle's state machine: request, start when due, finish (see the module doc)."""

    def __init__(self, policy: ThrottlePolicy | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        self._waiting: list[Attempt] = []
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()

    # -- the attempt's life ----------------------------------------------------

    def request(self, address: str, account: str, now: float) -> Attempt:
        """Queue an attempt (keys from :func:`address_key`, :func:`account_key`).

        Raises :class:`ThrottleBusy` when a key that does not admit it now has
        ``max_waiting`` attempts waiting already.
        """
        trusted = self._trusted.get((address, account))
        fresh_trust = trusted is not None and now - trusted < self.policy.trust_for
        gates = (address,) if fresh_trust else (address, account)
        states = [self._state(key, now) for key in gates]
        for state in states:
            if self._full(state) and not self._admits(state, now):
                for key in gates:
                    self._drop_if_clean(key)
                raise ThrottleBusy("too many login attempts waiting")
        for state in states:
            state.waiting += 1
        attempt = Attempt(address, account, gates)
        self._waiting.append(attempt)
        return attempt

    def start_due(self, now: float) -> list[Attempt]:
        """The waiting attempts whose checks may run now, oldest first; marked running."""
        started = []
        for attempt in list(self._waiting):
            states = [self._keys[key] for key in attempt.gates]
            if all(self._admits(state, now) for state in states):
                self._waiting.remove(attempt)
                attempt.running = True
                for state in states:
                    state.waiting -= 1
                    state.running += 1
                    state.last_used = now
                started.append(attempt)
        return started

    def shed(self, now: float) -> list[Attempt]:
        """Withdraw the youngest waiting attempts of keys that failed and hold too many waiting.

        A key without failures lets any number wait (they are only queueing
        for ``parallel_checks``); once it fails, all but ``max_waiting`` of
        them are refused, as new ones would be.
        """
        shed: list[Attempt] = []
        for attempt in reversed(list(self._waiting)):
            states = [self._keys[key] for key in attempt.gates]
            if any(
                self._recently_failed(st, now) and st.waiting > self.policy.max_waiting
                for st in states
            ):
                shed.append(attempt)
                self.abandon(attempt)
        return shed

    def next_due(self, now: float) -> float | None:
        """When a waiting attempt may become due by time alone (None: only by a finish)."""
        times = [
            self._open_at(state)
            for attempt in self._waiting
            for state in (self._keys[key] for key in attempt.gates)
            if self._recently_failed(state, now)
            and state.running == 0
            and self._open_at(state) > now
        ]
        return min(times, default=None)

    def finish(self, attempt: Attempt, succeeded: bool | None, now: float) -> None:
        """Record the outcome of a running attempt's check.

        ``succeeded`` is True (logged in), False (credentials refused) or None
        (no verdict: the check itself broke), which only frees the keys.
        """
        if not attempt.running:
            raise ValueError("finish() of an attempt that is not running")
        attempt.running = False
        for key in attempt.gates:
            self._keys[key].running -= 1
        if succeeded is None:
            pass
        elif succeeded:
            account = self._keys.get(attempt.account)
            if account is not None:
                account.failures = 0
            self._trust(attempt.address, attempt.account, now)
        else:
            for key in (attempt.address, attempt.account):
                state = self._state(key, now)
                state.failures += 1
                state.last_failure = now
        for key in (attempt.address, attempt.account):
            self._drop_if_clean(key)

    def abandon(self, attempt: Attempt) -> None:
        """Forget a waiting attempt whose connection went (a running one is finished instead)."""
        if attempt in self._waiting:
            self._waiting.remove(attempt)
            for key in attempt.gates:
                self._keys[key].waiting -= 1
                self._drop_if_clean(key)

    # -- inspection ------------------------------------------------------------

    def failures(self, key: str, now: float) -> int:
        """The failures a key has on record now."""
        state = self._keys.get(key)
        return 0 if state is None else self._forget(state, now).failures

    def __len__(self) -> int:
        """The number of keys tracked."""
        return len(self._keys)

    # -- keys --------------------------------------------------------------------

    def _open_at(self, state: _KeyState) -> float:
        return (state.last_failure or 0.0) + self.policy.delay(state.failures)

    def _forget(self, state: _KeyState, now: float) -> _KeyState:
        if state.last_failure is not None and now - state.last_failure >= self.policy.forget_after:
            state.failures = 0
            state.last_failure = None
        return state

    def _recently_failed(self, state: _KeyState, now: float) -> bool:
        return self._forget(state, now).last_failure is not None

    def _full(self, state: _KeyState) -> bool:
        return state.last_failure is not None and state.waiting >= self.policy.max_waiting

    def _admits(self, state: _KeyState, now: float) -> bool:
        if not self._recently_failed(state, now):
            return state.running < self.policy.parallel_checks
        return state.running == 0 and now >= self._open_at(state)

    def _state(self, key: str, now: float) -> _KeyState:
        """A key's state, created if new; marks it used and keeps the table bounded."""
        state = self._keys.get(key)
        if state is None:
            self._evict(now)
            state = self._keys[key] = _KeyState()
        self._keys.move_to_end(key)
        state.last_used = now
        return self._forget(state, now)

    def _evict(self, now: float) -> None:
        """Drop stale idle keys, then least recently used idle ones while the table is full."""
        for _ in range(len(self._keys)):
            key, state = next(iter(self._keys.items()))
            stale = now - state.last_used >= self.policy.forget_after
            if not stale and len(self._keys) < self.policy.max_keys:
                return
            if state.idle():
                del self._keys[key]
            else:  # in use by a connection: it is not the one to go
                self._keys.move_to_end(key)

    def _drop_if_clean(self, key: str) -> None:
        state = self._keys.get(key)
        if state is not None and state.idle() and state.last_failure is None:
            del self._keys[key]

    def _trust(self, address: str, account: str, now: float) -> None:
        pair = (address, account)
        self._trusted.pop(pair, None)
        self._trusted[pair] = now
        while len(self._trusted) > self.policy.trusted_pairs:
            self._trusted.popitem(last=False)
