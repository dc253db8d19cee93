"""The credential check of LOGIN / AUTHENTICATE: its turn in the throttle, its answer, the deadline.

:class:`CredentialCheckMixin` is what :class:`~transcoder.imap.login.LoginMixin`
calls once a LOGIN or an AUTHENTICATE exchange has produced credentials:

* From then until the tagged answer the server reads no further commands, so
  a client cannot pipeline around a delay.
* The check waits for its turn in the failed-login throttle
  (:mod:`transcoder.auth.throttle` through :mod:`.login_gate`), keyed by the
  client address and the login, across the factory's connections; a turn
  that came after a wait first looks whether the client is still there.
  An attempt the throttle refuses is answered ``NO [UNAVAILABLE]`` unchecked.
* A failure is answered ``NO [AUTHENTICATIONFAILED] Authentication failed``
  (RFC 5530), the same whether the account exists or not, held back
  ``login_failure_delay`` seconds doubling per failure on the connection up
  to ``max_login_delay``; the ``max_login_failures``-th (refusals count) ends
  the connection with ``* BYE``.  Each failure is logged as one line for
  fail2ban (docs/fail2ban.md): ``authentication failed: rip=<client address>
  user="<login>"``.
* Success answers ``OK [CAPABILITY ...]`` (RFC 3501 section 7.1) and switches
  to the post-login idle timeout.
* A connection not authenticated ``login_deadline`` seconds after it was
  made is closed with ``* BYE [UNAVAILABLE]``, however busy it keeps (the
  idle timer restarts with every line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.mail.imap4 import IAccount
from twisted.python.failure import Failure

from transcoder.auth.throttle import Attempt, ThrottleBusy
from transcoder.errors import AuthenticationFailed, ClientError, ServerError
from transcoder.imap.login_gate import LoginGate, peer_host
from transcoder.keys.keystore import KeyStoreUnavailable

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

#: Seconds a connection that waited for its turn is read before its check
#: runs: long enough for one reactor iteration to notice a close.
_LOOK_AGAIN = 0.001


class LoginThrottled(ClientError):
    """The throttle refused a login attempt without checking it (too many wait on its keys)."""

    code = "UNAVAILABLE"  # RFC 5530: a temporary failure


class KeystoreUnreachable(ClientError):
    """The credentials were right but the shared keystore cannot be reached (LOGIN refused)."""

    code = "UNAVAILABLE"  # RFC 5530: a temporary failure


class CredentialCheckMixin(_ServerBase):
    """Runs a login's credential check in its throttle turn and answers it."""

    # Provided by WireMixin (transcoder.imap.wire): a tagged NO/BAD for any error.
    send_error: Callable[[bytes | None, BaseException | Failure], None]
    #: The failed-login throttle, shared by the factory's connections.
    login_gate: LoginGate

    _login_failures = 0
    _login_delayed: IDelayedCall | None = None
    _login_deadline: IDelayedCall | None = None
    _login_turn: Deferred[Attempt] | None = None
    _disconnected = False

    # -- the credential check, success and (slowed) failure ---------------

    def _check_credentials(
        self, tag: bytes, login: bytes | None, login_call: Callable[[], Any]
    ) -> None:
        """Wait for the throttle's turn, then run the portal login; read nothing until answered.

        The idle timer stops meanwhile (waiting for the throttle is not
        idleness); the login deadline still runs.
        """
        self.pauseProducing()
        self.setTimeout(None)
        account = (login or b"").decode("utf-8", "backslashreplace")
        turn = self.login_gate.enter(self.transport.getPeer(), account)
        self._login_turn = turn
        waited = not turn.called
        turn.addCallbacks(
            self._take_turn,
            self._not_admitted,
            callbackArgs=(tag, login, login_call, waited),
            errbackArgs=(tag, login),
        )
        turn.addErrback(self._login_handling_broke)

    def _take_turn(
        self,
        attempt: Attempt,
        tag: bytes,
        login: bytes | None,
        login_call: Callable[[], Any],
        waited: bool,
    ) -> None:
        """The throttle admitted the attempt: check it, after a look at the connection if it waited.

        While it waited, reading was paused, so a client that gave up and
        closed went unnoticed: read for one reactor turn (octets are only
        buffered) before spending the key's slot on it.
        """
        self._login_turn = None
        if not waited:
            self._run_check(attempt, tag, login, login_call)
            return
        self.transport.resumeProducing()
        self.clock.callLater(_LOOK_AGAIN, self._checked_alive, attempt, tag, login, login_call)

    def _checked_alive(
        self, attempt: Attempt, tag: bytes, login: bytes | None, login_call: Callable[[], Any]
    ) -> None:
        if self._disconnected:
            self.login_gate.leave(attempt, None)
            return
        self.transport.pauseProducing()
        self._run_check(attempt, tag, login, login_call)

    def _run_check(
        self, attempt: Attempt, tag: bytes, login: bytes | None, login_call: Callable[[], Any]
    ) -> None:
        """Check the credentials now; tell the throttle the outcome."""
        d = maybeDeferred(login_call)
        d.addBoth(self._report_outcome, attempt)
        d.addCallback(self._keystore_reachable)
        d.addCallbacks(
            self._login_succeeded,
            self._login_failed,
            callbackArgs=(tag, login),
            errbackArgs=(tag, login),
        )
        d.addErrback(self._login_handling_broke)

    def _report_outcome(self, result: Any, attempt: Attempt) -> Any:
        """Tell the throttle whether the check accepted, refused, or broke."""
        if not isinstance(result, Failure):
            verdict: bool | None = True
        else:
            verdict = False if result.check(UnauthorizedLogin) else None
        self.login_gate.leave(attempt, verdict)
        return result

    def _keystore_reachable(self, result: tuple[Any, Any, Callable[[], None]]) -> Any:
        """Accepted: with a shared (PostgreSQL) keystore, read the account's view epoch first.

        A session that cannot reach the keystore can do nothing useful (SELECT,
        FETCH and XKEY all read it), so LOGIN answers ``NO [UNAVAILABLE]``
        (RFC 5530) at once rather than OK and a failing first SELECT.  The
        credentials were right: the throttle has been told so already.
        """
        keys = getattr(self, "keys", None)
        address = getattr(result[1], "address", None)
        if keys is None or keys.store.changes is None or not isinstance(address, str):
            return result  # SQLite (a local file) or no keystore: nothing to probe

        def unreachable(failure: Failure) -> Any:
            result[2]()  # log the avatar out
            failure.trap(KeyStoreUnavailable)
            raise KeystoreUnreachable("Keystore unavailable; try again later")

        d = keys.store.view_epoch(address, keys.now())
        d.addCallbacks(lambda _: result, unreachable)
        return d

    def _not_admitted(self, failure: Failure, tag: bytes, login: bytes | None) -> None:
        """The throttle refused the attempt (busy) or the connection went while it waited."""
        self._login_turn = None
        if self._disconnected or failure.check(CancelledError):
            return
        failure.trap(ThrottleBusy)
        self._login_failures += 1
        log.info(
            'authentication throttled: rip={rip} user="{user}"',
            rip=peer_host(self.transport.getPeer()),
            user=_quoted(login),
        )
        self._delay_answer(tag, LoginThrottled("Too many login attempts; try again later"))

    def _login_handling_broke(self, failure: Failure) -> None:
        """A bug while answering a login: the session state is unknown, so log and hang up."""
        log.failure("Login handling failed", failure)
        self.transport.loseConnection()

    def _login_succeeded(
        self, result: tuple[Any, Any, Callable[[], None]], tag: bytes, login: bytes | None
    ) -> None:
        """Enter the authenticated state and answer with the new capabilities."""
        iface, avatar, logout = result
        if self._disconnected:
            logout()
            return
        if iface is not IAccount:
            logout()
            self._login_failed(Failure(ServerError(f"realm returned {iface!r}")), tag, login)
            return
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self._cancel_login_deadline()
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        self.logged_in()
        log.info("Login of {login} from {peer}", login=_printable(login), peer=self._peer_text())
        caps = b" ".join(self.listCapabilities())
        self.sendPositiveResponse(tag, b"[CAPABILITY " + caps + b"] Logged in")
        self.resumeProducing()

    def logged_in(self) -> None:
        """Seam: the session just entered the authenticated state (``self.account`` is set).

        Called before the tagged OK; does nothing here (the backend front
        follows its backend connection from here on).
        """

    def _login_failed(self, failure: Failure, tag: bytes, login: bytes | None) -> None:
        """A rejected login gets the delayed, uniform NO; anything else an opaque server error."""
        if self._disconnected:
            return
        if not failure.check(UnauthorizedLogin):
            self.send_error(tag, failure)  # logged, answered NO [SERVERBUG]
            self.setTimeout(self.timeOut)
            self.resumeProducing()
            return
        self._login_failures += 1
        # One stable line per failure, for fail2ban (docs/fail2ban.md): the
        # client address first, then the login (quoted, controls escaped).
        log.warn(
            'authentication failed: rip={rip} user="{user}"',
            rip=peer_host(self.transport.getPeer()),
            user=_quoted(login),
            count=self._login_failures,
            login=_printable(login),
            peer=self._peer_text(),
        )
        self._delay_answer(tag, AuthenticationFailed("Authentication failed"))

    def _delay_answer(self, tag: bytes, error: ClientError) -> None:
        """Hold the refusal back: ``login_failure_delay`` doubling per failure on the connection."""
        s = self.settings
        delay = min(s.login_failure_delay * 2 ** (self._login_failures - 1), s.max_login_delay)
        self._login_delayed = self.clock.callLater(delay, self._answer_failure, tag, error)

    def _answer_failure(self, tag: bytes, error: ClientError) -> None:
        """Send the held-back NO; close with BYE after too many failures, else read on."""
        self._login_delayed = None
        self.send_error(tag, error)
        if self._login_failures >= self.settings.max_login_failures:
            log.warn(
                "Closing connection from {peer}: too many failed logins", peer=self._peer_text()
            )
            self.sendLine(b"* BYE Too many failed logins")
            self.transport.loseConnection()
            return
        self.setTimeout(self.timeOut)
        self.resumeProducing()

    # -- the login deadline ------------------------------------------------

    def connectionMade(self) -> None:
        """Greet, and start the clock on authenticating (``settings.login_deadline``)."""
        super().connectionMade()
        self._login_deadline = self.clock.callLater(
            self.settings.login_deadline, self._login_deadline_passed
        )

    def _login_deadline_passed(self) -> None:
        """Still not authenticated ``login_deadline`` seconds after connecting: autologout.

        The idle timer restarts with every command, so a client dribbling
        commands could otherwise stay unauthenticated for ever (RFC 3501
        section 5.4 lets the server autologout an idle client; this one is
        idle as far as logging in goes).
        """
        self._login_deadline = None
        if self.state != "unauth" or self._disconnected:
            return
        log.info("Closing connection from {peer}: not logged in in time", peer=self._peer_text())
        self.sendLine(b"* BYE [UNAVAILABLE] Autologout; not authenticated in time")
        self.transport.loseConnection()

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None

    # -- helpers -----------------------------------------------------------

    def _peer_text(self) -> str:
        """The peer address for log lines."""
        peer = self.transport.getPeer()
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        return f"{host}:{port}" if host is not None else str(peer)

    def connectionLost(self, reason: Failure) -> None:
        """Drop a held-back answer and a throttle turn; a login finishing later logs out."""
        self._disconnected = True
        if self._login_delayed is not None and self._login_delayed.active():
            self._login_delayed.cancel()
        self._login_delayed = None
        self._cancel_login_deadline()
        if self._login_turn is not None:
            turn, self._login_turn = self._login_turn, None
            turn.cancel()
        super().connectionLost(reason)


def _printable(login: bytes | None) -> str:
    """A login for the log: at most 100 characters, controls escaped (no forged log lines)."""
    text = (login or b"")[:100].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _quoted(login: bytes | None) -> str:
    """:func:`_printable`, with ``"`` escaped to sit between double quotes."""
    return _printable(login).replace('"', '\\"')
