"""XKEY on the protocol: every request, its answers, literals, states, pipelining, the audit.

The keystore is real (SQLite in tmp_path) and so is validation (cryptography,
gpg); only the thread pool is replaced, by running each call at once
(``InlineKeyStore``) or when the test says (``HeldKeyStore``), except in the
one test that uses the real reactor and a real pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.mail import imap4
from twisted.python.threadpool import ThreadPool

from tests.imap.harness import Session, make_session
from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE, NOW, der, key_usage, make_cert, pem
from transcoder.auth import AccountsFile, make_portal
from transcoder.client import KeyInfo, PolicyInfo
from transcoder.client.syntax import parse_xkey_responses
from transcoder.imap.settings import ServerSettings
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyStatus
from transcoder.store import MaildirStore

BOB = "bob@example.org"
PEER = "192.0.2.10:40000"


class InlineKeyStore(AsyncKeyStore):
    """An AsyncKeyStore whose "pool" runs each call at once, on the calling thread."""

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run now; the result arrives as an already fired Deferred."""
        return defer.maybeDeferred(function, *args, **kwargs)


class HeldKeyStore(AsyncKeyStore):
    """An AsyncKeyStore whose calls wait until :meth:`release`: a pool that is busy."""

    held: list[tuple[defer.Deferred[Any], Callable[[], Any]]]

    def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Queue the call; its Deferred fires when the test releases it."""
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((d, lambda: function(*args, **kwargs)))
        return d

    def release(self) -> None:
        """Run the oldest queued call and fire its Deferred."""
        d, call = self.held.pop(0)
        defer.maybeDeferred(call).chainDeferred(d)


def key_clock() -> Clock:
    """The keys' clock at the moment the test certificates are valid."""
    clock = Clock()
    clock.advance(NOW.timestamp())
    return clock


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    """The audit records of the keystore."""
    return []


@pytest.fixture
def keystore(tmp_path: Path, audit_log: list[dict[str, Any]]) -> Iterator[KeyStore]:
    """The real keystore file every session of a test shares."""
    with KeyStore(tmp_path / "keys.db", audit=audit_log.append) as store:
        yield store


def keyed_session(
    tmp_path: Path,
    store: KeyStore,
    address: str = ALICE,
    settings: ServerSettings | None = None,
    async_class: type[AsyncKeyStore] = InlineKeyStore,
) -> Session:
    """A logged-in session whose server has a key layer on ``store``."""
    session = make_session(tmp_path, address=address, settings=settings)
    clock = key_clock()
    async_store = async_class(store, clock, ThreadPool())
    session.server.keys = KeyAccess(async_store, clock)
    return session


@pytest.fixture
def alice(tmp_path: Path, keystore: KeyStore) -> Session:
    """alice@example.org, logged in, with XKEY available."""
    return keyed_session(tmp_path, keystore)


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    """One P-256 key for the module."""
    return ec.generate_private_key(ec.SECP256R1())


def put(session: Session, material: bytes) -> tuple[list[bytes], bytes]:
    """``XKEY PUT`` with a synchronizing literal, as a client waits for the "+"."""
    session.send(b"p XKEY PUT {%d}\r\n" % len(material))
    out = session.output()
    if not out.startswith(b"+ "):
        return Session.split(out, b"p")
    session.send(material + b"\r\n")
    return Session.split(session.output(), b"p")


def listings(untagged: list[bytes]) -> list[KeyInfo | PolicyInfo]:
    """The XKEY responses among ``untagged`` lines, parsed by the client library.

    Keys come before policies; no command answers with both.
    """
    keys, policies = parse_xkey_responses(
        ln[len(b"* XKEY ") :] for ln in untagged if ln.startswith(b"* XKEY ")
    )
    return [*keys, *policies]


def listed(session: Session) -> list[KeyInfo | PolicyInfo]:
    """What XKEY LIST reports now."""
    untagged, tagged = session.command(b"XKEY LIST")
    assert b" OK " in tagged, tagged
    return listings(untagged)


# -- availability and states -------------------------------------------------------


def test_capability_only_once_logged_in(tmp_path: Path, keystore: KeyStore) -> None:
    """XKEY is absent before login and listed in LOGIN's OK [CAPABILITY ...] and CAPABILITY."""
    accounts = AccountsFile(tmp_path / "accounts")
    accounts.add(ALICE, "pw")
    portal = make_portal(
        accounts, MaildirStore(tmp_path / "mail"), run_blocking=defer.maybeDeferred
    )
    session = make_session(tmp_path, state="unauth", peer="127.0.0.1", portal=portal)
    session.server.keys = KeyAccess(InlineKeyStore(keystore, key_clock(), ThreadPool()), Clock())
    untagged, _ = session.command(b"CAPABILITY")
    assert b"XKEY" not in untagged[0].split()
    _, tagged = session.command(b"LOGIN alice@example.org pw")
    assert tagged.startswith(b"t2 OK [CAPABILITY ") and b" XKEY" in tagged, tagged
    untagged, _ = session.command(b"CAPABILITY")
    assert b"XKEY" in untagged[0].split()


def test_before_login_is_bad(tmp_path: Path) -> None:
    """XKEY in the not-authenticated state is answered BAD, naming the states it is valid in."""
    session = make_session(tmp_path, state="unauth")
    _, tagged = session.command(b"XKEY LIST")
    assert tagged.startswith(b"t1 BAD ") and b"authenticated or selected" in tagged


def test_selected_state_works(alice: Session) -> None:
    """XKEY is valid in the selected state too."""
    alice.command(b"SELECT INBOX")
    _, tagged = alice.command(b"XKEY POLICY")
    assert tagged == b"t2 OK XKEY POLICY completed"


def test_without_key_layer_not_offered(tmp_path: Path) -> None:
    """A server without keystore neither lists XKEY nor reads a literal for it: NO [CANNOT]."""
    session = make_session(tmp_path)
    untagged, _ = session.command(b"CAPABILITY")
    assert b"XKEY" not in untagged[0].split()
    session.send(b"a XKEY PUT {100}\r\n")
    assert session.output().startswith(b"a NO [CANNOT] ")


def test_account_without_address_not_offered(tmp_path: Path, keystore: KeyStore) -> None:
    """An embedder's IAccount without ``address`` gets no XKEY capability and NO [CANNOT]."""
    session = keyed_session(tmp_path, keystore)
    session.server.account = imap4.MemoryAccount("alice")
    untagged, _ = session.command(b"CAPABILITY")
    assert b"XKEY" not in untagged[0].split()
    _, tagged = session.command(b"XKEY LIST")
    assert tagged.startswith(b"t2 NO [CANNOT] ")


# -- PUT -------------------------------------------------------------------------------


def test_put_der_literal_stores_raw_octets(
    alice: Session, keystore: KeyStore, p256: ec.EllipticCurvePrivateKey
) -> None:
    """A DER certificate (binary: CR, LF, NUL, 8-bit) in a literal is stored octet for octet."""
    cert = der(make_cert(p256, usage=key_usage(key_agreement=True)))
    untagged, tagged = put(alice, cert)
    assert tagged == b"p OK XKEY PUT completed"
    (listing,) = listings(untagged)
    assert isinstance(listing, KeyInfo)
    assert listing.status == "ACTIVE" and listing.usage == ("ENCRYPT",)
    (stored,) = keystore.list_keys(ALICE, NOW)
    assert stored.material == cert and stored.fingerprint == listing.fingerprint


def test_put_binary_openpgp_key(alice: Session, keystore: KeyStore, pgp_keys: PgpKeys) -> None:
    """A binary OpenPGP key in a literal is validated with gpg and stored."""
    untagged, tagged = put(alice, pgp_keys.alice_25519)
    assert tagged == b"p OK XKEY PUT completed"
    (listing,) = listings(untagged)
    assert isinstance(listing, KeyInfo)
    assert listing.format == "OPENPGP"
    assert listing.fingerprint == pgp_keys.alice_25519_fpr.lower()
    assert [k.fingerprint for k in keystore.list_keys(ALICE, NOW)] == [listing.fingerprint]


def test_non_synchronizing_literal(alice: Session, p256: ec.EllipticCurvePrivateKey) -> None:
    """PUT {n+} (LITERAL+) reads the key without a continuation request."""
    cert = pem(make_cert(p256))
    alice.send(b"a XKEY PUT {%d+}\r\n" % len(cert) + cert + b"\r\n")
    out = alice.output()
    assert not out.startswith(b"+") and b"a OK XKEY PUT completed" in out


def test_quoted_string_reaches_validation(alice: Session, keystore: KeyStore) -> None:
    """A quoted string is key material too; garbage is NO [XKEY-INVALID], nothing stored."""
    _, tagged = alice.command(b'XKEY PUT "not a key"')
    assert tagged.startswith(b"t1 NO [XKEY-INVALID] ")
    assert keystore.list_keys(None, NOW) == []


@pytest.mark.parametrize(
    ("make_material", "code"),
    [
        (lambda k: der(make_cert(k, sans=(BOB,))), b"XKEY-ADDRESS"),
        (lambda k: der(make_cert(k, not_after=NOW - timedelta(seconds=1))), b"XKEY-INVALID"),
        (lambda k: der(make_cert(k, not_before=NOW + timedelta(days=1))), b"XKEY-INVALID"),
        (lambda k: der(make_cert(rsa.generate_private_key(65537, 1024))), b"XKEY-INVALID"),
        (lambda k: pem(make_cert(k))[:200], b"XKEY-INVALID"),
        (lambda k: bytes(range(256)) * 4, b"XKEY-INVALID"),
        (lambda k: b"", b"XKEY-INVALID"),
    ],
    ids=["other-address", "expired", "not-yet-valid", "rsa-1024", "truncated", "random", "empty"],
)
def test_bad_keys_refused_and_nothing_stored(
    alice: Session,
    keystore: KeyStore,
    p256: ec.EllipticCurvePrivateKey,
    make_material: Callable[[Any], bytes],
    code: bytes,
) -> None:
    """Each bad certificate gets NO [<code>] with a reason; the keystore stays empty."""
    _, tagged = put(alice, make_material(p256))
    assert tagged.startswith(b"p NO [" + code + b"] ") and len(tagged) > 20, tagged
    assert keystore.list_keys(None, NOW) == []


def test_refusal_is_audited_with_peer(
    alice: Session, audit_log: list[dict[str, Any]], p256: ec.EllipticCurvePrivateKey
) -> None:
    """A refused PUT is audited with the account, the reason, the fingerprint and the peer."""
    cert = der(make_cert(p256, sans=(BOB,)))
    put(alice, cert)
    (record,) = audit_log
    assert record["event"] == "key.refused" and record["code"] == "XKEY-ADDRESS"
    assert record["account"] == ALICE and record["peer"] == PEER and record["via"] == "imap"
    assert record["fingerprint"]


def test_literal_over_cap_refused_before_continuation(tmp_path: Path, keystore: KeyStore) -> None:
    """A literal over max_key_size gets NO [XKEY-TOOBIG] and no "+"; one at the cap is read."""
    session = keyed_session(tmp_path, keystore, settings=ServerSettings(max_key_size=1024))
    session.send(b"a XKEY PUT {1025}\r\n")
    assert session.output().startswith(b"a NO [XKEY-TOOBIG] ")
    session.send(b"b XKEY PUT {1024}\r\n")
    assert session.output().startswith(b"+ ")
    session.send(b"\x30" * 1024 + b"\r\n")
    assert session.output().startswith(b"b NO [XKEY-INVALID] ")


def test_refused_non_synchronizing_literal_is_discarded(tmp_path: Path, keystore: KeyStore) -> None:
    """An oversized {n+} literal is read and thrown away, never run as commands."""
    session = keyed_session(tmp_path, keystore, settings=ServerSettings(max_key_size=1024))
    smuggled = (b"x LOGOUT\r\n" * 200)[:2000]
    session.send(b"a XKEY PUT {2000+}\r\n" + smuggled + b"\r\nb NOOP\r\n")
    out = session.output()
    assert out.startswith(b"a NO [XKEY-TOOBIG] ") and b"b OK NOOP" in out
    assert b"BYE" not in out and b"\r\nx " not in out


def test_key_cap_independent_of_string_cap(tmp_path: Path, keystore: KeyStore) -> None:
    """max_key_size above max_astring_literal_size: the key's literal is still read."""
    settings = ServerSettings(max_key_size=8192, max_astring_literal_size=1024)
    session = keyed_session(tmp_path, keystore, settings=settings)
    session.send(b"a XKEY PUT {4096}\r\n")
    assert session.output().startswith(b"+ ")


def test_key_cap_below_string_cap_applies(tmp_path: Path, keystore: KeyStore) -> None:
    """A key literal over max_key_size is refused even when strings may be longer."""
    settings = ServerSettings(max_key_size=1024, max_astring_literal_size=8192)
    session = keyed_session(tmp_path, keystore, settings=settings)
    session.send(b"a XKEY PUT {4096}\r\n")
    assert session.output().startswith(b"a NO [XKEY-TOOBIG]")


def test_arguments_after_literal_are_bad(alice: Session, keystore: KeyStore) -> None:
    """Anything after PUT's literal is a syntax error; nothing is stored."""
    alice.send(b"a XKEY PUT {3}\r\n")
    assert alice.output().startswith(b"+ ")
    alice.send(b"abc extra\r\nb NOOP\r\n")
    out = alice.output()
    assert out.startswith(b"a BAD ") and b"b OK" in out, out
    assert keystore.list_keys(None, NOW) == []


@pytest.mark.parametrize(
    "line", [b"XKEY", b"XKEY FROB", b"XKEY LIST ALL", b"XKEY PUT key", b"XKEY DELETE xyz"]
)
def test_syntax_errors_are_bad(alice: Session, line: bytes) -> None:
    """Malformed XKEY commands are answered BAD and the connection goes on."""
    _, tagged = alice.command(line)
    assert tagged.startswith(b"t1 BAD "), tagged
    _, tagged = alice.command(b"NOOP")
    assert tagged.startswith(b"t2 OK")


# -- LIST, DELETE, POLICY -----------------------------------------------------------------


def test_list_delete_and_supersede(
    alice: Session, keystore: KeyStore, p256: ec.EllipticCurvePrivateKey, pgp_keys: PgpKeys
) -> None:
    """LIST shows every key ever stored with its status; DELETE retires and reports it."""
    first = der(make_cert(p256))
    second = der(make_cert(ec.generate_private_key(ec.SECP384R1())))
    for material in (first, second, pgp_keys.alice_25519):
        assert put(alice, material)[1] == b"p OK XKEY PUT completed"
    keys = listed(alice)
    assert [(k.format, k.status) for k in keys if isinstance(k, KeyInfo)] == [
        ("SMIME", "RETIRED"),  # superseded by the second certificate
        ("SMIME", "ACTIVE"),
        ("OPENPGP", "ACTIVE"),
    ]
    fingerprint = keys[2].fingerprint  # type: ignore[union-attr]
    untagged, tagged = alice.command(b"XKEY DELETE " + fingerprint.upper().encode())
    assert tagged.endswith(b"OK XKEY DELETE completed")
    assert listings(untagged)[0].status == "RETIRED"  # type: ignore[union-attr]
    statuses = [k.status for k in listed(alice)]  # type: ignore[union-attr]
    assert statuses == ["RETIRED", "ACTIVE", "RETIRED"]


def test_delete_unknown_is_nokey(alice: Session, keystore: KeyStore) -> None:
    """DELETE of a fingerprint the account has no key for is NO [XKEY-NOKEY]."""
    _, tagged = alice.command(b"XKEY DELETE " + b"ab" * 32)
    assert tagged.startswith(b"t1 NO [XKEY-NOKEY] ")


def test_policy_transitions(
    alice: Session, keystore: KeyStore, p256: ec.EllipticCurvePrivateKey
) -> None:
    """POLICY: OFF/NIL by default, ALWAYS needs a usable key of the format, FORMAT switches."""

    def policy(line: bytes = b"XKEY POLICY") -> tuple[PolicyInfo | None, bytes]:
        untagged, tagged = alice.command(line)
        found = listings(untagged)
        return (found[0] if found else None), tagged  # type: ignore[return-value]

    assert policy()[0] == PolicyInfo("OFF", None, sign=False)
    shown, tagged = policy(b"XKEY POLICY MODE ALWAYS")
    assert shown is None and b"NO [XKEY-NOKEY] " in tagged
    assert policy()[0] == PolicyInfo("OFF", None, sign=False)
    put(alice, der(make_cert(p256)))
    assert policy()[0] == PolicyInfo("OFF", "SMIME", sign=False)
    assert policy(b"XKEY POLICY MODE ALWAYS")[0] == PolicyInfo("ALWAYS", "SMIME", sign=False)
    assert b"NO [XKEY-NOKEY] " in policy(b"XKEY POLICY FORMAT OPENPGP")[1]
    assert policy(b"XKEY POLICY MODE OFF")[0] == PolicyInfo("OFF", "SMIME", sign=False)
    shown, _ = policy(b"XKEY POLICY FORMAT OPENPGP")
    assert shown == PolicyInfo("OFF", "OPENPGP", sign=False)


def test_signing_only_certificate(
    alice: Session, keystore: KeyStore, p256: ec.EllipticCurvePrivateKey
) -> None:
    """A signing-only certificate is stored as USAGE (SIGN) and cannot satisfy MODE ALWAYS."""
    cert = der(make_cert(p256, usage=key_usage(digital_signature=True)))
    untagged, tagged = put(alice, cert)
    assert tagged == b"p OK XKEY PUT completed"
    assert listings(untagged)[0].usage == ("SIGN",)  # type: ignore[union-attr]
    _, tagged = alice.command(b"XKEY POLICY MODE ALWAYS")
    assert tagged.startswith(b"t1 NO [XKEY-NOKEY] ")


def test_accounts_are_isolated(
    tmp_path: Path, alice: Session, keystore: KeyStore, p256: ec.EllipticCurvePrivateKey
) -> None:
    """Bob sees none of Alice's keys and cannot retire them."""
    put(alice, der(make_cert(p256)))
    bob = keyed_session(tmp_path, keystore, address=BOB)
    assert listed(bob) == []
    fingerprint = listed(alice)[0].fingerprint  # type: ignore[union-attr]
    _, tagged = bob.command(b"XKEY DELETE " + fingerprint.encode())
    assert b"NO [XKEY-NOKEY]" in tagged
    assert [k.status for k in keystore.list_keys(ALICE, NOW)] == [KeyStatus.ACTIVE]


# -- off the reactor thread ------------------------------------------------------------------


def test_pipelined_commands_wait_for_xkey(tmp_path: Path, keystore: KeyStore) -> None:
    """A command pipelined behind a running XKEY is answered only after it."""
    session = keyed_session(tmp_path, keystore, async_class=HeldKeyStore)
    assert session.server.keys is not None
    held = session.server.keys.store
    assert isinstance(held, HeldKeyStore)
    held.held = []
    session.send(b"a XKEY LIST\r\nb NOOP\r\n")
    assert session.output() == b""
    held.release()
    session.clock.advance(0)  # the next command is read on the turn after an answer
    out = session.output()
    assert out.index(b"a OK XKEY LIST") < out.index(b"b OK NOOP"), out


@pytest_twisted.inlineCallbacks
def test_real_pool_runs_key_work_off_the_reactor_thread(
    tmp_path: Path, p256: ec.EllipticCurvePrivateKey
) -> Any:
    """With a real pool, validation and storage run on a worker thread and the answer comes back."""
    threads: list[int] = []
    store = KeyStore(
        tmp_path / "keys.db", audit=lambda record: threads.append(threading.get_ident())
    )
    pool = ThreadPool(1, 2, name="test-xkey")
    pool.start()
    try:
        session = make_session(tmp_path)
        clock = key_clock()
        session.server.keys = KeyAccess(AsyncKeyStore(store, reactor, pool), clock)
        cert = der(make_cert(p256))
        session.send(b"a XKEY PUT {%d+}\r\n" % len(cert) + cert + b"\r\n")
        out = session.output()
        for _ in range(500):
            if b"a OK" in out:
                break
            yield deferLater(reactor, 0.01, lambda: None)
            out += session.output()
        assert b"a OK XKEY PUT completed" in out, out
        assert threads and threading.get_ident() not in threads
    finally:
        pool.stop()
        store.close()
