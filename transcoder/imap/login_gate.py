"""The failed-login throttle on the reactor: a login attempt waits, as a Deferred, for its turn.

:class:`LoginGate` drives the sans-IO :class:`~transcoder.auth.throttle.LoginThrottle`
with an injected clock (``IReactorTime``): :meth:`LoginGate.enter` returns a
Deferred that fires when the attempt's credential check may run, and the
caller reports the check's outcome with :meth:`LoginGate.leave`.  The
factory (:class:`~transcoder.imap.server.TranscodingIMAP4Factory`) shares one
gate between all its connections, so failures count per client address and
per account across connections.

The client address is the transport's peer, which behind a ``haproxy:``
endpoint is the one the PROXY header carried (:mod:`transcoder.imap.proxy_protocol`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from transcoder.auth.throttle import (
    Attempt,
    LoginThrottle,
    ThrottleBusy,
    ThrottlePolicy,
    account_key,
    address_key,
)


def peer_host(peer: object) -> str:
    """The client address of a transport's peer, as logged: the IP (canonical), or ``local``."""
    if isinstance(peer, UNIXAddress):
        return "local"
    host = getattr(peer, "host", None)
    if not isinstance(host, str) or not host:
        return type(peer).__name__
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class LoginGate:
    """Lets login attempts run their credential checks when the throttle admits them."""

    def __init__(self, clock: IReactorTime, policy: ThrottlePolicy | None = None) -> None:
        self.clock = clock
        self.throttle = LoginThrottle(policy)
        self._waiters: dict[Attempt, Deferred[Attempt]] = {}
        self._timer: IDelayedCall | None = None
        self._starting = False
        self._again = False

    def address_key(self, peer: object) -> str:
        """The throttle key of a transport's peer."""
        return address_key(peer_host(peer), self.throttle.policy.ipv6_prefix)

    def enter(self, peer: object, login: str) -> Deferred[Attempt]:
        """A Deferred firing with the attempt when its check may run.

        It fails at once with :class:`ThrottleBusy` when a key is saturated;
        cancelling it (the connection went) withdraws the attempt.
        """
        try:
            attempt = self.throttle.request(
                self.address_key(peer), account_key(login), self.clock.seconds()
            )
        except ThrottleBusy as e:
            return fail(e)
        waiter: Deferred[Attempt] = Deferred(lambda _: self._withdraw(attempt))
        self._waiters[attempt] = waiter
        self._start_due()
        return waiter

    def leave(self, attempt: Attempt, succeeded: bool | None) -> None:
        """Report a check's outcome: True (logged in), False (refused), None (no verdict)."""
        self.throttle.finish(attempt, succeeded, self.clock.seconds())
        self._start_due()

    def _withdraw(self, attempt: Any) -> None:
        self._waiters.pop(attempt, None)
        self.throttle.abandon(attempt)
        self._start_due()

    def _start_due(self) -> None:
        """Fire the waiters whose turn has come; re-arm the timer for the next one."""
        if self._starting:  # a check finished synchronously inside a waiter's callback
            self._again = True
            return
        self._starting = True
        try:
            self._again = True
            while self._again:
                self._again = False
                now = self.clock.seconds()
                for attempt in self.throttle.shed(now):
                    self._waiters.pop(attempt).errback(ThrottleBusy("too many attempts waiting"))
                for attempt in self.throttle.start_due(now):
                    self._waiters.pop(attempt).callback(attempt)
        finally:
            self._starting = False
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        now = self.clock.seconds()
        due = self.throttle.next_due(now)
        if due is not None:
            self._timer = self.clock.callLater(due - now, self._start_due)
