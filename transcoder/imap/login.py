"""LOGIN and AUTHENTICATE: when plaintext passwords are accepted, and what a failure costs.

Policy (RFC 3501 sections 6.2.2, 6.2.3 and 11.1; RFC 9051 section 6.2):

* Plaintext mechanisms (LOGIN, AUTHENTICATE PLAIN and LOGIN) are offered only
  over TLS (after STARTTLS, or on an implicit-TLS port) or, when
  ``settings.allow_plaintext_loopback``, from a loopback peer.  Otherwise the
  server advertises ``LOGINDISABLED`` and no ``AUTH=PLAIN``/``AUTH=LOGIN``,
  and LOGIN is answered ``NO [PRIVACYREQUIRED]``.
* AUTHENTICATE takes an initial response (``SASL-IR``, RFC 4959); a ``*``
  line cancels the exchange with a tagged BAD (RFC 3501 section 6.2.2);
  a response that is not base64 is answered BAD.
* Across connections, the credential check of every attempt waits for its
  turn in the failed-login throttle (:mod:`transcoder.auth.throttle`, keyed
  per client address and per account, shared by the factory's connections):
  parallel guesses are serialised and delayed, a correct password included.
  When too many attempts already wait on a key, the attempt is refused
  unchecked with ``NO [UNAVAILABLE]``.
* Every failed login is answered ``NO [AUTHENTICATIONFAILED] Authentication
  failed`` -- the same words and the same delay whether the account exists or
  not (RFC 5530) -- and logged, for fail2ban (docs/fail2ban.md), as one line
  ``authentication failed: rip=<client address> user="<login>"``.  The answer
  is held back ``login_failure_delay`` seconds, doubling per failure on the
  connection up to ``max_login_delay``; the ``max_login_failures``-th failure
  (throttle refusals count) ends the connection with ``* BYE``.
* The client address is the transport's peer: behind a ``haproxy:``
  endpoint, the address the PROXY header carried -- for the throttle, the
  log and the loopback rule alike.
* A connection not authenticated ``login_deadline`` seconds after it was
  made is closed with ``* BYE [UNAVAILABLE]``, however busy it keeps.
* From the start of a LOGIN or of the credential check of an AUTHENTICATE
  until its tagged answer, the server reads no further commands, so a client
  cannot pipeline around the delay.
* A successful login answers ``OK [CAPABILITY ...]`` with the post-login
  capabilities (RFC 3501 section 7.1).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.logger import Logger
from twisted.mail.imap4 import IAccount, IllegalClientResponse, LOGINCredentials, PLAINCredentials
from twisted.python.failure import Failure

from transcoder.auth.throttle import Attempt, ThrottleBusy
from transcoder.errors import (
    AuthenticationFailed,
    BadCommand,
    ClientError,
    PrivacyRequired,
    ServerError,
)
from transcoder.imap.login_gate import LoginGate, peer_host
from transcoder.imap.mailbox_syntax import LiteralAhead, split_string_argument

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

#: SASL mechanisms that send the password in the clear.
PLAINTEXT_MECHANISMS = (b"PLAIN", b"LOGIN")


class PlainCredentials(PLAINCredentials):
    """SASL PLAIN (RFC 4616) that keeps the authorization identity.

    Twisted's PLAINCredentials drops it; we keep it so a request to act as
    someone else (proxy authorization, which we do not offer) fails.
    """

    authzid = b""

    def setResponse(self, response: bytes) -> None:
        """Split ``authzid NUL authcid NUL passwd``; BAD when it has another shape."""
        super().setResponse(response)
        self.authzid = response.split(b"\0", 1)[0]

    def acts_as_self(self) -> bool:
        """Whether the authorization identity is empty or the authentication identity."""
        return self.authzid in (b"", None) or self.authzid.lower() == (self.username or b"").lower()


class LoginThrottled(ClientError):
    """The throttle refused a login attempt without checking it (too many wait on its keys)."""

    code = "UNAVAILABLE"  # RFC 5530: a temporary failure


class LoginCredentials(LOGINCredentials):
    """The non-standard SASL LOGIN mechanism, with the customary prompts."""

    def __init__(self) -> None:
        super().__init__()
        # Popped from the end: username first (draft-murchison-sasl-login).
        self.challenges = [b"Password:", b"Username:"]


def _peer_is_local(peer: object) -> bool:
    """Whether a peer address is loopback (127/8, ::1, ::ffff:127/104) or a UNIX socket."""
    if isinstance(peer, UNIXAddress):
        return True
    try:
        ip = ipaddress.ip_address(getattr(peer, "host", ""))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _decode_sasl(data: bytes) -> bytes | None:
    """Decode one base64 SASL response (RFC 3501 section 6.2.2); None when it is not base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class LoginMixin(_ServerBase):
    """LOGIN / AUTHENTICATE policy and the failed-login slowdown for TranscodingIMAP4Server."""

    # Provided by WireMixin (transcoder.imap.wire): a tagged NO/BAD for any error.
    send_error: Callable[[bytes | None, BaseException | Failure], None]
    #: The failed-login throttle, shared by the factory's connections.
    login_gate: LoginGate

    _login_failures = 0
    _login_delayed: IDelayedCall | None = None
    _login_deadline: IDelayedCall | None = None
    _login_turn: Deferred[Attempt] | None = None
    _disconnected = False

    # -- policy and capabilities -------------------------------------------

    def plaintext_auth_allowed(self) -> bool:
        """Whether passwords may be sent: over TLS, or from loopback if the settings allow it."""
        if self.startedTLS or ISSLTransport(self.transport, None) is not None:
            return True
        return self.settings.allow_plaintext_loopback and _peer_is_local(self.transport.getPeer())

    def sasl_mechanisms(self) -> dict[bytes, Callable[[], Any]]:
        """AUTHENTICATE mechanisms offered now: ours for PLAIN/LOGIN, plus any others configured."""
        offered: dict[bytes, Callable[[], Any]] = {}
        if self.plaintext_auth_allowed():
            offered = {b"PLAIN": PlainCredentials, b"LOGIN": LoginCredentials}
        for name, factory in (self.challengers or {}).items():
            if name.upper() not in PLAINTEXT_MECHANISMS:
                offered.setdefault(name.upper(), factory)
        return offered

    def capabilities(self) -> dict[bytes, Any]:
        """Capabilities with LOGINDISABLED / AUTH= / SASL-IR set by the plaintext policy.

        After login, the authentication capabilities (and STARTTLS, valid only
        in the not-authenticated state, RFC 3501 section 6.2.1) are dropped.
        """
        caps: dict[bytes, Any] = super().capabilities()
        for name in (b"AUTH", b"LOGINDISABLED", b"SASL-IR"):
            caps.pop(name, None)
        if self.state != "unauth":
            caps.pop(b"STARTTLS", None)
            return caps
        if not self.plaintext_auth_allowed():
            caps[b"LOGINDISABLED"] = None
        mechanisms = list(self.sasl_mechanisms())
        if mechanisms:
            caps[b"AUTH"] = mechanisms
            caps[b"SASL-IR"] = None
        return caps

    # -- LOGIN ---------------------------------------------------------------

    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        """LOGIN (RFC 3501 section 6.2.3), refused without TLS, slowed when it fails."""
        if not self.plaintext_auth_allowed():
            self.send_error(
                tag, PrivacyRequired("LOGIN is disabled until TLS is negotiated (STARTTLS)")
            )
            return
        self._check_credentials(tag, user, lambda: self.authenticateLogin(user, passwd))

    def arg_login_string(self, line: bytes | None) -> Any:
        """A LOGIN argument: an astring with RFC 3501 section 4.3 escapes and literals.

        Twisted's arg_astring does not undo ``\\"`` and ``\\\\`` escapes, which
        clients such as imaplib use for passwords holding those characters.
        """
        try:
            parsed = split_string_argument(line or b"")
        except BadCommand as e:
            raise IllegalClientResponse(e.text) from None
        if not isinstance(parsed, LiteralAhead):
            return parsed
        d = self._stringLiteral(parsed.size)  # the literal machinery, with its size cap
        return d.addCallback(lambda result: (result[0], result[1].removeprefix(b" ")))

    # Twisted binds the handler into this tuple, so it is restated to reach our do_LOGIN.
    unauth_LOGIN = (do_LOGIN, arg_login_string, arg_login_string)

    # -- AUTHENTICATE ----------------------------------------------------------

    def do_AUTHENTICATE(self, tag: bytes, mechanism: bytes, initial: bytes | None) -> None:
        """AUTHENTICATE (RFC 3501 section 6.2.2) with an optional initial response (RFC 4959)."""
        name = mechanism.upper()
        factory = self.sasl_mechanisms().get(name)
        if factory is None:
            if name in PLAINTEXT_MECHANISMS:
                error: ClientError = PrivacyRequired(
                    "Plaintext authentication is disabled until TLS is negotiated (STARTTLS)"
                )
            else:
                error = ClientError("Unsupported authentication mechanism", code="CANNOT")
            self.send_error(tag, error)
            return
        challenger = factory()
        if initial is None:
            self._send_challenge(tag, challenger)
            return
        # RFC 4959 section 3: the initial response answers the first (implied)
        # challenge; "=" stands for an empty one.
        challenger.getChallenge()
        self._take_response(tag, challenger, b"" if initial == b"=" else _decode_sasl(initial))

    def _arg_initial_response(self, line: bytes | None) -> tuple[bytes | None, bytes]:
        """Parse the optional SASL-IR argument: one base64 token or ``=``."""
        if not line:
            return None, b""
        if b" " in line.strip():
            raise IllegalClientResponse("Too many arguments for AUTHENTICATE")
        return line.strip(), b""

    unauth_AUTHENTICATE = (
        do_AUTHENTICATE,
        lambda self, line: self.arg_atom(line),
        _arg_initial_response,
    )

    def _send_challenge(self, tag: bytes, challenger: Any) -> None:
        """Send the next challenge as a continuation request and await the client's line.

        The line arrives through Twisted's ``pending`` parse state, as the
        continuation of the command, so the wire rules (line length) apply.
        """
        challenge = challenger.getChallenge()
        answer: Deferred[bytes] = Deferred()
        answer.addCallback(self._sasl_line, tag, challenger)
        answer.addErrback(self._login_handling_broke)
        self._pendingLiteral = answer
        self.parseState = "pending"
        # "+" SP base64 (RFC 3501 section 7.5), even when the challenge is empty.
        self.sendLine(b"+ " + base64.b64encode(challenge))

    def _sasl_line(self, line: bytes, tag: bytes, challenger: Any) -> None:
        """One client line of an AUTHENTICATE exchange: base64 data, or ``*`` to cancel."""
        if line.strip() == b"*":
            self.send_error(tag, BadCommand("AUTHENTICATE cancelled"))
            return
        self._take_response(tag, challenger, _decode_sasl(line.strip()))

    def _take_response(self, tag: bytes, challenger: Any, decoded: bytes | None) -> None:
        """Feed a decoded response to the challenger; challenge again or check the credentials."""
        if decoded is None:
            self.send_error(tag, BadCommand("Malformed AUTHENTICATE response: not base64"))
            return
        try:
            challenger.setResponse(decoded)
        except IllegalClientResponse as e:
            self.send_error(tag, BadCommand(f"Malformed AUTHENTICATE response: {e}"))
            return
        if challenger.moreChallenges():
            self._send_challenge(tag, challenger)
            return
        self._check_credentials(tag, challenger.username, lambda: self._sasl_login(challenger))

    def _sasl_login(self, challenger: Any) -> Any:
        """Ask the portal for an IAccount for the credentials the exchange produced."""
        if self.portal is None:
            raise UnauthorizedLogin("no portal")
        if isinstance(challenger, PlainCredentials) and not challenger.acts_as_self():
            raise UnauthorizedLogin("proxy authorization is not supported")
        return self.portal.login(challenger, None, IAccount)

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
        turn.addCallbacks(
            self._run_check,
            self._not_admitted,
            callbackArgs=(tag, login, login_call),
            errbackArgs=(tag, login),
        )
        turn.addErrback(self._login_handling_broke)

    def _run_check(
        self, attempt: Attempt, tag: bytes, login: bytes | None, login_call: Callable[[], Any]
    ) -> None:
        """The throttle admitted the attempt: check the credentials now."""
        self._login_turn = None
        d = maybeDeferred(login_call)
        d.addBoth(self._report_outcome, attempt)
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
        log.info("Login of {login} from {peer}", login=_printable(login), peer=self._peer_text())
        caps = b" ".join(self.listCapabilities())
        self.sendPositiveResponse(tag, b"[CAPABILITY " + caps + b"] Logged in")
        self.resumeProducing()

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
