"""Two fronts behind a real HAProxy (issue 14, part 2): one Dovecot, one PostgreSQL keystore.

* A client through the balancer provisions a key and sets MODE ALWAYS; the
  message fetched through each front (HAProxy's per-front listeners) is the
  same octets, which ``openssl cms -decrypt`` opens, under the same UIDVALIDITY.
* The fronts see the client's address from the PROXY v2 header, not
  HAProxy's: the per-address connection limit counts it, failed logins are
  logged and throttled under it, the keystore's audit table records it.
* A front stopped during a session: the client reconnects through the
  balancer, lands on the other front and sees the same UIDVALIDITY, UIDs and
  octets; what it APPENDed before (answered OK) is there.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tests.cluster.conftest import ALICE, MARKER, PER_ADDRESS, Cluster, SourcedIMAP4, login
from tests.cms.parties import Party, make_party
from tests.cms.peers import openssl_opens
from tests.integration.conftest import PASSWORD
from transcoder.client import XKeyClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def alice_key(tmp_path_factory: pytest.TempPathFactory) -> Party:
    """alice's S/MIME certificate (P-256) and private key."""
    return make_party(
        tmp_path_factory.mktemp("cluster-alice"), "alice", ec.generate_private_key(ec.SECP256R1())
    )


@pytest.fixture(scope="module")
def encrypted(cluster: Cluster, alice_key: Party) -> Cluster:
    """Through the balancer: alice's key stored and MODE ALWAYS set."""
    with XKeyClient(login(cluster.port, "127.0.0.7", None)) as keys:
        keys.provision(alice_key.cert.public_bytes(Encoding.DER))
        keys.set_policy(mode="always")
    return cluster


def snapshot(port: int, source: str) -> tuple[bytes, list[bytes], list[bytes]]:
    """(UIDVALIDITY, UIDs, each message's octets) of alice's INBOX through ``port``."""
    imap = login(port, source)
    try:
        validity = imap.response("UIDVALIDITY")[1][0]
        typ, data = imap.uid("SEARCH", "ALL")
        assert typ == "OK", data
        uids = data[0].split()
        octets = []
        for uid in uids:
            typ, data = imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            assert typ == "OK", data
            octets.append(data[0][1])
        return validity, uids, octets
    finally:
        imap.logout()


def test_each_front_serves_the_same_encrypted_octets(
    encrypted: Cluster, alice_key: Party, tmp_path: Path
) -> None:
    """Front 1 and front 2 (each forced through its HAProxy listener) and the balancer itself:
    one UIDVALIDITY, one set of UIDs, the same octets, which openssl opens with alice's key."""
    one = snapshot(encrypted.direct("front1"), "127.0.0.2")
    two = snapshot(encrypted.direct("front2"), "127.0.0.2")
    assert one == two
    assert snapshot(encrypted.port, "127.0.0.2") == one
    (view,) = one[2]
    assert MARKER not in view and b"application/pkcs7-mime" in view
    assert MARKER in openssl_opens(view, alice_key, tmp_path)


def test_the_connection_limit_counts_the_clients_address(encrypted: Cluster) -> None:
    """PER_ADDRESS connections from 127.0.0.3 fill its quota on a front; the next one is
    refused, while 127.0.0.4 -- the same HAProxy, the same front -- is still greeted."""
    port = encrypted.direct("front1")
    held = [_connect(port, "127.0.0.3") for _ in range(PER_ADDRESS)]
    try:
        assert all(greeting.startswith(b"* OK") for _, greeting in held)
        refused, greeting = _connect(port, "127.0.0.3")
        refused.close()
        assert greeting.startswith(b"* BYE [UNAVAILABLE] Too many connections"), greeting
        other, greeting = _connect(port, "127.0.0.4")
        other.close()
        assert greeting.startswith(b"* OK"), greeting
    finally:
        for sock, _ in held:
            sock.close()


def test_failed_logins_are_logged_under_the_clients_address(
    encrypted: Cluster,
) -> None:
    """A wrong password from 127.0.0.5 through the balancer: the fail2ban line names
    127.0.0.5 (the address the throttle keys on, peer_host) on the front that checked it,
    never HAProxy's 127.0.0.1."""
    imap = SourcedIMAP4(encrypted.port, "127.0.0.5")
    with pytest.raises(SourcedIMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login(ALICE, "not the password")
    imap.shutdown()
    logs = _eventually_logged(encrypted, 'authentication failed: rip=127.0.0.5 user="alice')
    assert "rip=127.0.0.1 " not in logs


def test_the_login_throttle_slows_the_guessing_address_not_its_neighbour(
    encrypted: Cluster,
) -> None:
    """Three wrong passwords (for a missing account) from 127.0.0.11 through HAProxy to front1;
    then alice logs in from 127.0.0.11 and, a moment later, from 127.0.0.10. The guessing
    address waits its throttle turn; the other is answered first. Were the throttle keyed on
    what TCP shows (HAProxy's 127.0.0.1 for both), the second would queue behind the first."""
    port = encrypted.direct("front1")
    for _ in range(3):
        guess = SourcedIMAP4(port, "127.0.0.11")
        with pytest.raises(SourcedIMAP4.error, match="AUTHENTICATIONFAILED"):
            guess.login("mallory@example.org", "guess")
        guess.shutdown()
    answered: dict[str, float] = {}

    def alice_from(source: str) -> None:
        imap = SourcedIMAP4(port, source)
        imap.login(ALICE, PASSWORD)
        answered[source] = time.monotonic()
        imap.logout()

    started = time.monotonic()
    slowed = threading.Thread(target=alice_from, args=("127.0.0.11",))
    slowed.start()
    time.sleep(0.2)
    alice_from("127.0.0.10")
    slowed.join(60)
    assert answered["127.0.0.10"] < answered["127.0.0.11"]
    assert answered["127.0.0.11"] - started >= 1.0  # waited for its turn (2^(n-1) s)


def test_the_audit_trail_records_the_clients_address(encrypted: Cluster) -> None:
    """The key stored through the balancer from 127.0.0.7: its audit rows name that address."""
    with psycopg.connect(encrypted.keystore) as connection:
        rows = connection.execute(
            "SELECT event, record FROM audit WHERE account = %s ORDER BY id", (ALICE,)
        ).fetchall()
    peers = {json.loads(record).get("peer", "").rsplit(":", 1)[0] for _, record in rows}
    assert rows and peers == {"127.0.0.7"}, rows


def test_a_front_stopped_mid_session_the_client_reconnects_to_the_other(
    encrypted: Cluster, alice_key: Party, tmp_path: Path
) -> None:
    """The front serving a session is stopped (SIGTERM by PID): reconnecting through the
    balancer reaches the other front; same UIDVALIDITY, same UIDs, same octets, and the
    message APPENDed (answered OK) before the stop is among them."""
    before = snapshot(encrypted.port, "127.0.0.6")
    session = login(encrypted.port, "127.0.0.6")
    typ, data = session.append("INBOX", None, None, b"Subject: acknowledged\r\n\r\nkept\r\n")
    assert typ == "OK", data
    serving = _front_of(encrypted, session)
    serving_front = encrypted.fronts[serving]
    serving_front.stop()
    try:
        with pytest.raises((SourcedIMAP4.abort, OSError)):
            session.noop()
            session.noop()
        after = snapshot(encrypted.port, "127.0.0.6")
        assert after[0] == before[0]
        assert after[1][: len(before[1])] == before[1]
        assert after[2][: len(before[2])] == before[2]
        assert len(after[1]) == len(before[1]) + 1
        assert b"kept" in openssl_opens(after[2][-1], alice_key, tmp_path)
        other = next(name for name in encrypted.fronts if name != serving)
        assert snapshot(encrypted.direct(other), "127.0.0.6") == after
    finally:
        serving_front.start()
        _wait_until_up(encrypted, serving)


def _connect(port: int, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), 30, source_address=(source, 0))
    return sock, sock.recv(200)


def _front_of(cluster: Cluster, session: SourcedIMAP4) -> str:
    """The front whose log has this session's login (its PROXY source address and port)."""
    sock = session.sock
    host, port = sock.getsockname()[:2]
    needle = f"Login of {ALICE} from {host}:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [name for name, front in cluster.fronts.items() if needle in front.logs()]
        if found:
            (name,) = found
            return name
        time.sleep(0.1)
    raise AssertionError(f"no front logged {needle!r}")


def _eventually_logged(cluster: Cluster, needle: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        logs = "".join(front.logs() for front in cluster.fronts.values())
        if needle in logs or time.monotonic() > deadline:
            assert needle in logs
            return logs
        time.sleep(0.1)


def _wait_until_up(cluster: Cluster, name: str) -> None:
    """Until HAProxy's listener for ``name`` greets again (its health check passed)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sock, greeting = _connect(cluster.direct(name), "127.0.0.9")
            sock.close()
            if greeting.startswith(b"* OK"):
                return
        except OSError:
            pass
        time.sleep(0.2)


__all__ = ["PASSWORD"]
