"""LOGIN / AUTHENTICATE: plaintext policy, SASL exchanges, and the failed-login slowdown."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from tests.imap.harness import Session, make_session
from transcoder.auth import AccountsFile, MailRealm, make_portal
from transcoder.imap.login import _peer_is_local
from transcoder.imap.settings import ServerSettings
from transcoder.store import MaildirStore

REMOTE = "192.0.2.10"
LOOPBACK = "127.0.0.1"
FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed"


def run_now(f: Any, *args: Any) -> Any:
    """Run the (real) scrypt check synchronously, so the Clock alone drives the protocol."""
    return maybeDeferred(f, *args)


def _portal(tmp_path: Path, run_blocking: Any = run_now) -> Any:
    """A real portal: an accounts file with alice@example.org / 'pw' over a real Maildir store."""
    accounts = AccountsFile(tmp_path / "accounts")
    if accounts.get("alice@example.org") is None:
        accounts.add("alice@example.org", "pw")
    return make_portal(accounts, MaildirStore(tmp_path / "mail"), run_blocking=run_blocking)


def connect(
    tmp_path: Path, peer: str = LOOPBACK, settings: ServerSettings | None = None, **kw: Any
) -> Session:
    """A fresh, not yet authenticated connection from ``peer``."""
    return make_session(
        tmp_path, state="unauth", peer=peer, portal=_portal(tmp_path, **kw), settings=settings
    )


def capabilities(session: Session) -> set[bytes]:
    """The capability names the server lists now."""
    untagged, tagged = session.command(b"CAPABILITY")
    assert tagged.split()[1] == b"OK"
    line = next(ln for ln in untagged if ln.startswith(b"* CAPABILITY "))
    return set(line.split()[2:])


def b64(data: bytes) -> bytes:
    """Base64 as a SASL response line carries it."""
    return base64.b64encode(data)


def lines(session: Session) -> list[bytes]:
    """The lines the server wrote since the last look."""
    return [ln for ln in session.output().split(b"\r\n") if ln]


# -- capabilities and the plaintext policy --------------------------------------


def test_remote_peer_without_tls_gets_logindisabled(tmp_path: Path) -> None:
    """Before TLS, a non-loopback client sees LOGINDISABLED and no plaintext AUTH= mechanism."""
    caps = capabilities(connect(tmp_path, peer=REMOTE))
    assert b"LOGINDISABLED" in caps
    assert not {c for c in caps if c.startswith(b"AUTH=")}


def test_loopback_peer_may_use_plaintext(tmp_path: Path) -> None:
    """From loopback, LOGIN is enabled and AUTH=PLAIN, AUTH=LOGIN and SASL-IR are advertised."""
    caps = capabilities(connect(tmp_path, peer=LOOPBACK))
    assert b"LOGINDISABLED" not in caps
    assert {b"AUTH=PLAIN", b"AUTH=LOGIN", b"SASL-IR"} <= caps


def test_loopback_exception_can_be_turned_off(tmp_path: Path) -> None:
    """With allow_plaintext_loopback off, even loopback clients must use TLS."""
    settings = ServerSettings(allow_plaintext_loopback=False)
    session = connect(tmp_path, peer=LOOPBACK, settings=settings)
    assert b"LOGINDISABLED" in capabilities(session)
    _, tagged = session.command(b"LOGIN alice@example.org pw")
    assert tagged.split(b" ", 1)[1].startswith(b"NO [PRIVACYREQUIRED]")


@pytest.mark.parametrize("how", ["starttls", "implicit"])
def test_tls_enables_plaintext_mechanisms(tmp_path: Path, how: str) -> None:
    """Over TLS (after STARTTLS, or on a TLS transport), a remote client may log in."""
    session = connect(tmp_path, peer=REMOTE)
    if how == "starttls":
        session.server.startedTLS = True
    else:
        directlyProvides(session.transport, ISSLTransport)
    caps = capabilities(session)
    assert b"LOGINDISABLED" not in caps
    assert {b"AUTH=PLAIN", b"AUTH=LOGIN"} <= caps
    _, tagged = session.command(b"LOGIN alice@example.org pw")
    assert b" OK " in tagged


@pytest.mark.parametrize(
    "peer, local",
    [
        (IPv4Address("TCP", "127.0.0.1", 1), True),
        (IPv4Address("TCP", "127.1.2.3", 1), True),
        (IPv6Address("TCP", "::1", 1), True),
        (IPv6Address("TCP", "::ffff:127.0.0.1", 1), True),
        (UNIXAddress(b"/run/imap.sock"), True),
        (IPv4Address("TCP", "192.0.2.10", 1), False),
        (IPv4Address("TCP", "10.0.0.1", 1), False),
        (IPv6Address("TCP", "2001:db8::1", 1), False),
        (IPv6Address("TCP", "::ffff:192.0.2.1", 1), False),
    ],
)
def test_loopback_detection(peer: Any, local: bool) -> None:
    """127/8, ::1, IPv4-mapped 127/8 and UNIX sockets are local; anything else is not."""
    assert _peer_is_local(peer) is local


def test_login_disabled_is_privacyrequired(tmp_path: Path) -> None:
    """LOGIN before TLS from a remote peer is refused NO [PRIVACYREQUIRED], not BAD, at once."""
    session = connect(tmp_path, peer=REMOTE)
    _, tagged = session.command(b"LOGIN alice@example.org pw")
    assert tagged.startswith(b"t1 NO [PRIVACYREQUIRED] ")
    assert session.server.state == "unauth"


def test_authenticate_plain_disabled_is_privacyrequired(tmp_path: Path) -> None:
    """AUTHENTICATE PLAIN before TLS from a remote peer is refused without a challenge."""
    session = connect(tmp_path, peer=REMOTE)
    _, tagged = session.command(b"AUTHENTICATE PLAIN " + b64(b"\0alice@example.org\0pw"))
    assert tagged.startswith(b"t1 NO [PRIVACYREQUIRED] ")


# -- LOGIN ------------------------------------------------------------------------


def test_login_ok_reports_new_capabilities(tmp_path: Path) -> None:
    """A good LOGIN (any case) enters the authenticated state; OK carries the new capabilities."""
    session = connect(tmp_path)
    _, tagged = session.command(b"LOGIN Alice@Example.ORG pw")
    assert tagged.startswith(b"t1 OK [CAPABILITY IMAP4rev1 ")
    assert tagged.endswith(b"] Logged in")
    assert b"AUTH=" not in tagged and b"LOGINDISABLED" not in tagged
    assert session.server.state == "auth"
    assert session.server.account.address == "alice@example.org"
    caps = capabilities(session)
    assert b"AUTH=PLAIN" not in caps and b"SASL-IR" not in caps


def test_login_with_literal_password(tmp_path: Path) -> None:
    """A password sent as a literal works (the read pause does not disturb literals)."""
    session = connect(tmp_path)
    session.send(b"t1 LOGIN alice@example.org {2}\r\n")
    assert session.output().startswith(b"+")
    session.send(b"pw\r\n")
    assert session.output().startswith(b"t1 OK [CAPABILITY ")


@pytest.mark.parametrize("login", [b"alice@example.org wrong", b"nobody@example.org pw"])
def test_failure_is_uniform_and_delayed(tmp_path: Path, login: bytes) -> None:
    """Wrong password and unknown user get the same NO, after the same one-second delay."""
    session = connect(tmp_path)
    session.send(b"t1 LOGIN " + login + b"\r\n")
    assert session.output() == b""
    session.clock.advance(0.999)
    assert session.output() == b""
    session.clock.advance(0.001)
    assert session.output() == b"t1 " + FAILED + b"\r\n"
    assert session.server.state == "unauth"


def test_delay_doubles_up_to_the_cap(tmp_path: Path) -> None:
    """Each further failure on a connection doubles the delay, up to max_login_delay."""
    settings = ServerSettings(login_failure_delay=1.0, max_login_delay=4.0, max_login_failures=10)
    session = connect(tmp_path, settings=settings)
    for i, expected in enumerate([1.0, 2.0, 4.0, 4.0], 1):
        session.send(b"t%d LOGIN alice@example.org wrong\r\n" % i)
        session.clock.advance(expected - 0.01)
        assert session.output() == b"", f"failure {i} answered early"
        session.clock.advance(0.01)
        assert session.output() == b"t%d %s\r\n" % (i, FAILED)


def test_bye_after_too_many_failures(tmp_path: Path) -> None:
    """The max_login_failures-th failure is answered, then BYE, then the connection closes."""
    settings = ServerSettings(login_failure_delay=0.5, max_login_failures=3)
    session = connect(tmp_path, settings=settings)
    for i in (1, 2, 3):
        session.send(b"t%d LOGIN nobody@example.org x\r\n" % i)
        session.clock.advance(10)
        assert not session.transport.disconnecting or i == 3
    assert lines(session)[-2:] == [b"t3 " + FAILED, b"* BYE Too many failed logins"]
    assert session.transport.disconnecting


def test_success_does_not_reset_into_bye(tmp_path: Path) -> None:
    """A correct login after some failures (below the limit) still succeeds."""
    session = connect(tmp_path, settings=ServerSettings(max_login_failures=3))
    session.send(b"t1 LOGIN alice@example.org wrong\r\nt2 LOGIN alice@example.org wrong\r\n")
    session.clock.advance(1.0)  # t1's NO; t2 is read now, its NO comes 2 s later
    session.clock.advance(2.0)
    session.send(b"t3 LOGIN alice@example.org pw\r\n")
    assert lines(session)[-1].startswith(b"t3 OK [CAPABILITY ")


def test_pipelined_commands_wait_for_the_delay(tmp_path: Path) -> None:
    """Commands pipelined behind a failed LOGIN are not read until its delayed NO is sent."""
    session = connect(tmp_path)
    session.send(
        b"t1 LOGIN alice@example.org wrong\r\nt2 NOOP\r\nt3 LOGIN alice@example.org pw\r\n"
    )
    assert session.output() == b""
    assert session.server.state == "unauth"
    session.clock.advance(1.0)
    out = lines(session)
    assert out[0] == b"t1 " + FAILED
    assert out[1].startswith(b"t2 OK")
    assert out[2].startswith(b"t3 OK [CAPABILITY ")


def test_failed_login_is_logged_with_peer_and_login(tmp_path: Path) -> None:
    """A failed login is logged with the peer address and the login tried."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        session = connect(tmp_path, peer=LOOPBACK)
        session.send(b"t1 LOGIN nobody@example.org x\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    failed = [e for e in events if e.get("login") == "nobody@example.org"]
    assert failed and failed[0]["peer"] == "127.0.0.1:40000"


def test_misconfigured_portal_is_a_server_error_not_a_failure(tmp_path: Path) -> None:
    """A portal that cannot check passwords answers NO [SERVERBUG] at once, not a failed login."""
    portal = Portal(MailRealm(MaildirStore(tmp_path / "mail")), [])
    session = make_session(tmp_path, state="unauth", peer=LOOPBACK, portal=portal)
    _, tagged = session.command(b"LOGIN alice@example.org pw")
    assert tagged.startswith(b"t1 NO [SERVERBUG] ")
    assert session.server.state == "unauth"


def test_disconnect_during_delay_cancels_the_answer(tmp_path: Path) -> None:
    """A client that hangs up while its NO is held back leaves no pending call behind."""
    session = connect(tmp_path)
    session.send(b"t1 LOGIN alice@example.org wrong\r\n")
    assert session.clock.getDelayedCalls()
    session.server.connectionLost(Failure(ConnectionError("gone")))
    assert not [c for c in session.clock.getDelayedCalls() if c.func.__name__ == "_answer_failure"]


# -- AUTHENTICATE --------------------------------------------------------------------


def test_authenticate_plain_with_challenge(tmp_path: Path) -> None:
    """AUTHENTICATE PLAIN: an empty challenge '+ ', then the response logs in."""
    session = connect(tmp_path)
    session.send(b"t1 AUTHENTICATE PLAIN\r\n")
    assert session.output() == b"+ \r\n"
    session.send(b64(b"\0alice@example.org\0pw") + b"\r\n")
    assert session.output().startswith(b"t1 OK [CAPABILITY IMAP4rev1 ")
    assert session.server.state == "auth"


def test_authenticate_plain_with_initial_response(tmp_path: Path) -> None:
    """SASL-IR (RFC 4959): the credentials on the command line log in without a challenge."""
    session = connect(tmp_path)
    untagged, tagged = session.command(b"AUTHENTICATE plain " + b64(b"\0alice@example.org\0pw"))
    assert untagged == []
    assert tagged.startswith(b"t1 OK [CAPABILITY ")


@pytest.mark.parametrize(
    "response",
    [
        b"\0alice@example.org\0wrong",
        b"\0nobody@example.org\0pw",
        b"bob@example.org\0alice@example.org\0pw",
    ],
)
def test_authenticate_plain_failure_is_uniform(tmp_path: Path, response: bytes) -> None:
    """Bad password, unknown user and proxy authorization all get the same delayed NO."""
    session = connect(tmp_path)
    session.send(b"t1 AUTHENTICATE PLAIN " + b64(response) + b"\r\n")
    assert session.output() == b""
    session.clock.advance(1.0)
    assert session.output() == b"t1 " + FAILED + b"\r\n"


def test_authenticate_plain_authzid_of_self(tmp_path: Path) -> None:
    """An authorization identity equal to the login is accepted."""
    session = connect(tmp_path)
    response = b64(b"alice@example.org\0Alice@example.org\0pw")
    _, tagged = session.command(b"AUTHENTICATE PLAIN " + response)
    assert tagged.startswith(b"t1 OK ")


def test_authenticate_login_mechanism(tmp_path: Path) -> None:
    """AUTHENTICATE LOGIN prompts Username:, then Password:, then logs in."""
    session = connect(tmp_path)
    session.send(b"t1 AUTHENTICATE LOGIN\r\n")
    assert session.output() == b"+ " + b64(b"Username:") + b"\r\n"
    session.send(b64(b"alice@example.org") + b"\r\n")
    assert session.output() == b"+ " + b64(b"Password:") + b"\r\n"
    session.send(b64(b"pw") + b"\r\n")
    assert session.output().startswith(b"t1 OK [CAPABILITY ")


def test_authenticate_cancel(tmp_path: Path) -> None:
    """A '*' line cancels the exchange with a tagged BAD; it is not a failed login."""
    session = connect(tmp_path)
    session.send(b"t1 AUTHENTICATE PLAIN\r\n")
    session.output()
    session.send(b"*\r\n")
    assert session.output().startswith(b"t1 BAD ")
    session.send(b"t2 NOOP\r\n")
    assert session.output().startswith(b"t2 OK")
    session.send(b"t3 LOGIN alice@example.org wrong\r\n")
    session.clock.advance(1.0)  # still the first failure's delay
    assert session.output() == b"t3 " + FAILED + b"\r\n"


@pytest.mark.parametrize("inline", [True, False])
def test_authenticate_malformed_base64_is_bad(tmp_path: Path, inline: bool) -> None:
    """A response that is not base64 is answered BAD, inline or after the challenge."""
    session = connect(tmp_path)
    if inline:
        session.send(b"t1 AUTHENTICATE PLAIN AGFsaWNl!!!\r\n")
    else:
        session.send(b"t1 AUTHENTICATE PLAIN\r\n")
        session.output()
        session.send(b"AGFsaWNl!!!\r\n")
    assert session.output().startswith(b"t1 BAD ")
    assert session.server.state == "unauth"


def test_authenticate_overlong_response_ends_the_exchange(tmp_path: Path) -> None:
    """An overlong SASL response line gets a tagged BAD; the next line is a command again."""
    session = connect(tmp_path, settings=ServerSettings(max_line_length=1000))
    session.send(b"t1 AUTHENTICATE PLAIN\r\n")
    session.output()
    session.send(b"A" * 3000 + b"\r\n")
    assert session.output().startswith(b"t1 BAD [TOOBIG] ")
    session.send(b"t2 NOOP\r\n")
    assert session.output().startswith(b"t2 OK")


def test_authenticate_plain_wrong_shape_is_bad(tmp_path: Path) -> None:
    """A PLAIN response without its two NULs is a syntax error (BAD)."""
    session = connect(tmp_path)
    _, tagged = session.command(b"AUTHENTICATE PLAIN " + b64(b"alice@example.org pw"))
    assert tagged.startswith(b"t1 BAD ")


def test_authenticate_unknown_mechanism(tmp_path: Path) -> None:
    """An unsupported mechanism is refused with a tagged NO (RFC 3501 section 6.2.2)."""
    session = connect(tmp_path)
    _, tagged = session.command(b"AUTHENTICATE CRAM-MD5")
    assert tagged.startswith(b"t1 NO ")


# -- the check runs in a thread -----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_commands_wait_while_the_password_is_checked_in_a_thread(tmp_path: Path):
    """With the real threadpool, a pipelined command is only read after the LOGIN completes."""
    from twisted.internet.threads import deferToThread

    session = connect(tmp_path, run_blocking=deferToThread)
    session.send(b"t1 LOGIN alice@example.org pw\r\nt2 NOOP\r\n")
    assert session.output() == b""  # scrypt is running off the reactor thread
    out = b""
    for _ in range(500):
        yield deferLater(reactor, 0.01, lambda: None)
        out += session.output()
        if b"t2 " in out:
            break
    answered = [ln for ln in out.split(b"\r\n") if ln]
    assert answered[0].startswith(b"t1 OK [CAPABILITY ")
    assert answered[1].startswith(b"t2 OK")


def test_login_with_quoted_escapes(tmp_path: Path) -> None:
    """A quoted password with \\" and \\\\ escapes (as imaplib sends them) is unescaped."""
    session = connect(tmp_path)
    AccountsFile(tmp_path / "accounts").add("bob@example.org", 'p"a\\ss')
    _, tagged = session.command(b'LOGIN "bob@example.org" "p\\"a\\\\ss"')
    assert tagged.startswith(b"t1 OK [CAPABILITY ")
