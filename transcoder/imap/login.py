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
* The client address is the transport's peer: behind a ``haproxy:``
  endpoint, the address the PROXY header carried -- for the loopback rule as
  for the throttle and the log.
* What happens to the credentials then -- their turn in the failed-login
  throttle, the uniform and delayed failure, the log line for fail2ban, the
  login deadline -- is :mod:`.login_check`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.mail.imap4 import IAccount, IllegalClientResponse, LOGINCredentials, PLAINCredentials
from twisted.python.failure import Failure

from transcoder.errors import (
    BadCommand,
    ClientError,
    PrivacyRequired,
)
from transcoder.imap.login_check import CredentialCheckMixin
from transcoder.imap.mailbox_syntax import LiteralAhead, split_string_argument

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


class LoginMixin(CredentialCheckMixin):
    """LOGIN / AUTHENTICATE policy and exchanges for TranscodingIMAP4Server."""

    # Provided by WireMixin (transcoder.imap.wire): a tagged NO/BAD for any error.
    send_error: Callable[[bytes | None, BaseException | Failure], None]

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

    def authenticateLogin(self, user: bytes, passwd: bytes) -> Any:
        """The portal's IAccount for LOGIN's credentials (see :meth:`login_credentials`)."""
        if self.portal is None:
            raise UnauthorizedLogin("no portal")
        credentials = UsernamePassword(user, passwd)
        self.login_credentials(credentials)
        return self.portal.login(credentials, None, IAccount)

    def login_credentials(self, credentials: Any) -> None:
        """Seam: the credentials of every LOGIN and AUTHENTICATE, before the portal checks them.

        Does nothing here; a subclass may annotate them for its checker (the
        backend front notes the client's address, passed on to the backend).
        """

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
        self.login_credentials(challenger)
        return self.portal.login(challenger, None, IAccount)
