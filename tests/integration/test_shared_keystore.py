"""Two fronts, one PostgreSQL keystore (issue 14, part 1), on the real servers.

Two ``twistd transcoder`` processes, each with its own data directory (the
same account, the same message in it) and the same ``--keystore
postgresql://...`` and ``--view-secret``.  A key or policy change made
through one front takes effect on the other before its next FETCH: the view
it serves opens with ``openssl cms -decrypt`` and the new key only, and a
session the change made stale ends with ``* BYE [UNAVAILABLE]``.  With
PostgreSQL down a front fails closed -- never plaintext -- and answers
``NO [UNAVAILABLE]``; it recovers when PostgreSQL is back.
"""

from __future__ import annotations

import imaplib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.cms.parties import Party, make_party
from tests.cms.peers import openssl_opens
from tests.integration.conftest import RunningServer, admin
from tests.integration.transcoding import (
    SMIME,
    RecordingIMAP4,
    append,
    fetch_body,
    login,
    openssl_decrypt,
    provision,
    raw,
    running_server,
    set_mode,
)
from tests.postgres import PostgresServer
from transcoder.client import XKeyClient
from transcoder.client.model import XKeyError

pytestmark = pytest.mark.integration

_T = TypeVar("_T")

ALICE = "alice@example.org"
MARKER = b"the same mail on every front"
MESSAGE = (
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: shared keystore\r\n"
    b"Message-ID: <shared@example.org>\r\n\r\n" + MARKER + b"\r\n"
)


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> tuple[Party, Party]:
    """Two S/MIME certificates of alice's (RSA, then P-256), with their private keys."""
    root = tmp_path_factory.mktemp("shared-keystore-parties")
    (root / "second").mkdir()
    return (
        make_party(root, "alice", rsa.generate_private_key(65537, 2048)),
        make_party(root / "second", "alice", ec.generate_private_key(ec.SECP256R1())),
    )


def start_fronts(root: Path, dsn: str, count: int, stack: ExitStack) -> list[RunningServer]:
    """``count`` fronts sharing the keystore ``dsn`` and a view secret; alice's message in each."""
    secret = root / "view-secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    fronts = []
    for n in range(count):
        (root / f"front{n}").mkdir()
        args = ("--keystore", dsn, "--view-secret", str(secret))
        front = stack.enter_context(running_server(root / f"front{n}", [ALICE], args))
        imap = login(front, ALICE)
        append(imap, MESSAGE)
        imap.logout()
        fronts.append(front)
    return fronts


@pytest.fixture
def fronts(tmp_path: Path, postgresql: PostgresServer) -> Iterator[list[RunningServer]]:
    """Two fronts on a fresh database of the session's PostgreSQL."""
    with ExitStack() as stack:
        yield start_fronts(tmp_path, postgresql.new_database(), 2, stack)


def first_uid(imap: imaplib.IMAP4) -> int:
    """The UID of the (only) message of the selected mailbox."""
    typ, data = imap.uid("SEARCH", "ALL")
    assert typ == "OK", data
    return int(data[0].split()[0])


def fresh_view(front: RunningServer) -> bytes:
    """A new session's FETCH of alice's message on ``front``."""
    imap = login(front, ALICE)
    try:
        return fetch_body(imap, first_uid(imap))
    finally:
        imap.logout()


def opens_with(view: bytes, party: Party, workdir: Path) -> bool:
    """Whether ``openssl cms -decrypt`` opens ``view`` with ``party``'s key (MARKER inside)."""
    return MARKER in openssl_opens(view, party, workdir)


def test_a_key_put_through_one_front_is_used_by_the_others_next_fetch(
    fronts: list[RunningServer], parties: tuple[Party, Party], tmp_path: Path
) -> None:
    """XKEY PUT and POLICY through A; B's next FETCH is encrypted to that key, then to the next."""
    a, b = fronts
    first, second = parties
    assert MARKER in fresh_view(b)  # MODE OFF: the stored message
    provision(a, ALICE, first.cert.public_bytes(_der()), SMIME)
    view = fresh_view(b)
    assert MARKER not in view
    assert MARKER in openssl_decrypt(view, first, tmp_path)
    # The next key, through A again: B drops what it made for the first one.
    provision(a, ALICE, second.cert.public_bytes(_der()), SMIME)
    view = fresh_view(b)
    assert opens_with(view, second, tmp_path) and not opens_with(view, first, tmp_path)


def test_a_key_deleted_through_one_front_is_not_used_by_the_other(
    fronts: list[RunningServer], parties: tuple[Party, Party], tmp_path: Path
) -> None:
    """XKEY DELETE through B: A's next FETCH no longer encrypts to that key, nor serves plaintext.

    Under MODE ALWAYS with no active key left, A must fail closed (a tagged NO,
    no literal); once a new key is put through B, A encrypts to it alone.
    """
    a, b = fronts
    first, second = parties
    stored = provision(a, ALICE, first.cert.public_bytes(_der()), SMIME)
    assert opens_with(fresh_view(a), first, tmp_path)
    imap = login(b, ALICE, None)
    XKeyClient(imap).retire(stored.fingerprint)
    imap.logout()
    imap = login(a, ALICE)
    uid = first_uid(imap)
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    assert typ == "NO", data
    assert MARKER not in raw(data)
    imap.logout()
    provision(b, ALICE, second.cert.public_bytes(_der()), SMIME)
    view = fresh_view(a)
    assert opens_with(view, second, tmp_path) and not opens_with(view, first, tmp_path)


def test_a_policy_change_through_one_front_ends_the_others_stale_session(
    fronts: list[RunningServer], parties: tuple[Party, Party]
) -> None:
    """B's selected session, presented under the old views, ends with BYE once A changes them."""
    a, b = fronts
    imap = XKeyClient.connect("127.0.0.1", a.imap_port, ALICE, _password(), "plain")
    with imap as keys:
        keys.provision(parties[0].cert.public_bytes(_der()))  # MODE OFF: no view changes
    stale = login(b, ALICE)
    assert stale.noop()[0] == "OK"
    set_mode(a, ALICE, "ALWAYS")
    deadline = time.monotonic() + 10
    with pytest.raises(imaplib.IMAP4.abort):
        while time.monotonic() < deadline:  # NOOP is no FETCH: the notification ends it
            stale.noop()
            time.sleep(0.02)
    assert b"* BYE [UNAVAILABLE] Keys or policy of this account changed" in stale.received
    assert MARKER not in stale.received.split(b"BYE")[-1]


def test_an_admin_change_reaches_every_front(
    fronts: list[RunningServer], parties: tuple[Party, Party], tmp_path: Path
) -> None:
    """transcoder-admin --keystore: the key and policy it sets are what both fronts serve."""
    dsn = _front_keystore(fronts[0])
    pem = tmp_path / "alice.pem"
    pem.write_bytes(parties[0].cert_path.read_bytes())
    data = fronts[0].data
    assert admin(data, "--keystore", dsn, "key", "import", ALICE, str(pem)).returncode == 0
    done = admin(data, "--keystore", dsn, "policy", ALICE, "--mode", "always")
    assert done.returncode == 0 and "MODE ALWAYS FORMAT SMIME" in done.stdout, done.stderr
    for front in fronts:
        assert MARKER in openssl_decrypt(fresh_view(front), parties[0], tmp_path)
    assert not (data / "audit.jsonl").exists()  # the trail is the database's audit table


def test_keystore_down_fails_closed_and_the_front_recovers(
    tmp_path: Path, parties: tuple[Party, Party]
) -> None:
    """PostgreSQL stopped: FETCH under ALWAYS is NO (no plaintext), LOGIN, XKEY and SELECT
    NO [UNAVAILABLE]; started again: the same front serves the encrypted view."""
    server = PostgresServer()
    server.start()
    try:
        with ExitStack() as stack:
            (front,) = start_fronts(tmp_path, server.new_database(), 1, stack)
            provision(front, ALICE, parties[0].cert.public_bytes(_der()), SMIME)
            session = login(front, ALICE)
            uid = first_uid(session)
            server.stop()
            fetch_fails_closed(session, uid)
            # A new LOGIN is refused at once (tests/cluster/test_login_keystore.py);
            # the session logged in before the outage gets NO [UNAVAILABLE] for the rest.
            with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
                login(front, ALICE, None)
            typ, data = session.select("INBOX")
            assert typ == "NO" and b"[UNAVAILABLE]" in data[0], data
            with pytest.raises(XKeyError) as refused:
                XKeyClient(session).keys()
            assert refused.value.code == "UNAVAILABLE"
            server.start()
            view = eventually(lambda: fresh_view(front))
            assert MARKER in openssl_decrypt(view, parties[0], tmp_path)
    finally:
        server.remove()


def eventually(attempt: Callable[[], _T], timeout: float = 30.0) -> _T:
    """``attempt()`` once it stops failing its assertions or IMAP commands (else the last
    failure, after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except (AssertionError, imaplib.IMAP4.error):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def fetch_fails_closed(session: RecordingIMAP4, uid: int) -> None:
    """FETCH of message ``uid`` while the keystore is out of reach: NO, and not an octet of
    the message's text sent."""
    typ, data = session.uid("FETCH", str(uid), "(BODY.PEEK[])")
    assert typ == "NO", data
    assert MARKER not in session.received


def _der() -> object:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def _password() -> str:
    from tests.integration.conftest import PASSWORD

    return PASSWORD


def _front_keystore(front: RunningServer) -> str:
    args = list(front.extra_args)
    return args[args.index("--keystore") + 1]


__all__ = ["RecordingIMAP4"]


def test_a_daemonized_front_serves_key_requests_and_recovers(tmp_path: Path) -> None:
    """twistd without -n forks after building the service: the keystore's pool must be made
    in the serving process -- its threads are the ones that connect again after an outage."""
    import signal

    from tests.integration.conftest import PASSWORD, free_port

    postgresql = PostgresServer()
    data = tmp_path / "data"
    assert admin(data, "user", "add", ALICE, stdin=PASSWORD + "\n").returncode == 0
    port, pidfile = free_port(), tmp_path / "twistd.pid"
    try:
        postgresql.start()
        _daemon_front(postgresql, data, port, pidfile, tmp_path)
    finally:
        postgresql.remove()
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pidfile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)


def _daemon_front(
    postgresql: PostgresServer, data: Path, port: int, pidfile: Path, tmp_path: Path
) -> None:
    """Start the daemonized front; concurrent XKEY requests, an outage, recovery."""
    import socket
    import sys
    import threading

    from tests.integration.conftest import PASSWORD, REPO

    started = subprocess.run(
        [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *(f"--pidfile={pidfile}", f"--logfile={tmp_path / 'twistd.log'}", "transcoder"),
            *("--data", str(data), "--imap", f"tcp:{port}:interface=127.0.0.1"),
            *("--imaps", "none", "--keystore", postgresql.new_database()),
        ],
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (tmp_path / "twistd.log").read_text()
            time.sleep(0.1)
    errors: list[str] = []

    def client() -> None:
        try:
            for _ in range(4):
                with XKeyClient.connect("127.0.0.1", port, ALICE, PASSWORD, "plain") as keys:
                    keys.policy()
                    keys.keys()
        except Exception as error:  # reported below
            errors.append(repr(error))

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert errors == []
    postgresql.stop()
    postgresql.start()
    deadline = time.monotonic() + 30
    while True:
        errors.clear()
        client()
        if not errors:
            break
        assert time.monotonic() < deadline, errors
        time.sleep(0.5)
