"""XKEY end to end: the real server (twistd) on loopback, driven by the stdlib's imaplib.

Every key of issue 3's list goes through a real IMAP client; each refusal is
checked for its response code and for the keystore being unchanged, read
straight from ``DIR/keys.db``.  Certificates are made for the server's real
clock; OpenPGP keys come from the session's gpg fixture (tests/keyfactory.py).
"""

from __future__ import annotations

import imaplib
import json
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from tests.keyfactory import PgpKeys
from tests.keys.certs import der, key_usage, make_ca, make_cert, pem
from transcoder.client import KeyInfo, PolicyInfo
from transcoder.client.syntax import parse_xkey_responses

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@example.org", "bob@example.org"
#: Accounts of the shared server; stateful tests each take their own.
ACCOUNTS = (ALICE, BOB, "carol@example.org", "dave@example.org", "erin@example.org")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module, with the accounts of ACCOUNTS."""
    data = tmp_path_factory.mktemp("xkey") / "data"
    for address in ACCOUNTS:
        assert admin(data, "user", "add", address, stdin=PASSWORD + "\n").returncode == 0
    server = RunningServer(data, free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _imaplib_knows_xkey(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let imaplib send XKEY in every state (it refuses unknown commands on its own)."""
    monkeypatch.setitem(imaplib.Commands, "XKEY", ("NONAUTH", "AUTH", "SELECTED"))


def connect(server: RunningServer, user: str | None = ALICE) -> imaplib.IMAP4:
    """An imaplib connection, logged in as ``user`` (plaintext is allowed from loopback)."""
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    if user is not None:
        client.login(user, PASSWORD)
    return client


def xkey(
    client: imaplib.IMAP4, *args: str, literal: bytes | None = None
) -> tuple[str, str, list[KeyInfo | PolicyInfo]]:
    """Send ``XKEY args`` (PUT's key as a synchronizing literal); (status, text, listings).

    The listings are the untagged XKEY responses as the client library parses
    them, keys before policies (no command answers with both).
    """
    client.untagged_responses.pop("XKEY", None)
    if literal is not None:
        # imaplib appends {n}, awaits "+", then sends the octets (typeshed says str; it is bytes).
        client.literal = literal  # type: ignore[assignment]
    typ, data = client._simple_command("XKEY", *args)
    untagged = client.untagged_responses.pop("XKEY", [])
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    keys, policies = parse_xkey_responses(untagged)
    return typ, text, [*keys, *policies]


def keys_of(client: imaplib.IMAP4) -> list[KeyInfo]:
    """What XKEY LIST reports."""
    typ, text, found = xkey(client, "LIST")
    assert typ == "OK", text
    return [k for k in found if isinstance(k, KeyInfo)]


def keystore_rows(server: RunningServer) -> list[tuple[Any, ...]]:
    """Every key and policy row in DIR/keys.db, read independently of the server."""
    with sqlite3.connect(f"file:{server.data / 'keys.db'}?mode=ro", uri=True) as db:
        keys = db.execute("SELECT account, fingerprint, status FROM keys ORDER BY id").fetchall()
        policies = db.execute("SELECT account, mode, format FROM policies ORDER BY 1").fetchall()
    return keys + policies


def fresh_cert(key: Any, address: str = ALICE, **overrides: Any) -> x509.Certificate:
    """A certificate for ``address`` valid now by the server's real clock."""
    now = datetime.now(UTC)
    validity = {"not_before": now - timedelta(days=1), "not_after": now + timedelta(days=365)}
    return make_cert(key, sans=(address,), **{**validity, **overrides})


def refused(server: RunningServer, material: bytes, code: str, user: str = ALICE) -> str:
    """PUT ``material``; assert NO [code] and an unchanged keystore; return the reason."""
    client = connect(server, user)
    before = keystore_rows(server)
    listed_before = keys_of(client)
    typ, text, found = xkey(client, "PUT", literal=material)
    assert (typ, text.split(" ", 1)[0]) == ("NO", f"[{code}]"), text
    assert found == []
    assert keys_of(client) == listed_before
    assert keystore_rows(server) == before
    client.logout()
    return text


# -- the session ------------------------------------------------------------------------


def test_capability_after_login_only(running: RunningServer) -> None:
    """XKEY is not advertised before login, and is after it."""
    client = connect(running, None)
    assert "XKEY" not in client.capabilities
    client.login(ALICE, PASSWORD)
    typ, data = client.capability()
    assert typ == "OK" and b"XKEY" in data[0].split()
    client.logout()


def test_xkey_before_login_is_bad(running: RunningServer) -> None:
    """XKEY in the not-authenticated state gets a tagged BAD; nothing changes."""
    client = connect(running, None)
    before = keystore_rows(running)
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client._simple_command("XKEY", "LIST")
    client.literal = b"junk"  # type: ignore[assignment]
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client._simple_command("XKEY", "PUT")
    assert client.noop()[0] == "OK"
    assert keystore_rows(running) == before


# -- accepted keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_key", "encoding"),
    [
        (lambda: rsa.generate_private_key(65537, 2048), der),
        (lambda: rsa.generate_private_key(65537, 3072), pem),
        (lambda: ec.generate_private_key(ec.SECP256R1()), der),
        (lambda: ec.generate_private_key(ec.SECP384R1()), pem),
    ],
    ids=["rsa-2048-der", "rsa-3072-pem", "p256-der", "p384-pem"],
)
def test_certificates_accepted(running: RunningServer, make_key: Any, encoding: Any) -> None:
    """RSA-2048/3072 and P-256/P-384 certificates are stored ACTIVE and listed."""
    cert = fresh_cert(make_key())
    client = connect(running)
    typ, text, (stored, *superseded) = xkey(client, "PUT", literal=encoding(cert))
    assert typ == "OK", text
    # Alice's certificate of an earlier test, if any, is reported superseded.
    assert all(k.status == "RETIRED" for k in superseded)  # type: ignore[union-attr]
    assert isinstance(stored, KeyInfo)
    assert stored.format == "SMIME" and stored.status == "ACTIVE"
    assert stored.addresses == (ALICE,) and "ENCRYPT" in stored.usage
    assert stored.not_after == cert.not_valid_after_utc.replace(microsecond=0)
    assert stored in keys_of(client)
    client.logout()


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_openpgp_keys_accepted(running: RunningServer, pgp_keys: PgpKeys, armored: bool) -> None:
    """Binary and armored OpenPGP public keys are stored under their primary fingerprint."""
    material = pgp_keys.alice_rsa_armored if armored else pgp_keys.alice_25519
    fingerprint = pgp_keys.alice_rsa_fpr if armored else pgp_keys.alice_25519_fpr
    client = connect(running)
    typ, text, (stored, *_) = xkey(client, "PUT", literal=material)
    assert typ == "OK", text
    assert isinstance(stored, KeyInfo) and stored.format == "OPENPGP"
    assert stored.fingerprint == fingerprint.lower() and stored.status == "ACTIVE"
    client.logout()


# -- refused keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_material", "code"),
    [
        (lambda: der(fresh_cert(ec.generate_private_key(ec.SECP256R1()), BOB)), "XKEY-ADDRESS"),
        (
            lambda: der(
                fresh_cert(
                    ec.generate_private_key(ec.SECP256R1()),
                    not_before=datetime.now(UTC) - timedelta(days=400),
                    not_after=datetime.now(UTC) - timedelta(days=1),
                )
            ),
            "XKEY-INVALID",
        ),
        (
            lambda: der(
                fresh_cert(
                    ec.generate_private_key(ec.SECP256R1()),
                    not_before=datetime.now(UTC) + timedelta(days=1),
                )
            ),
            "XKEY-INVALID",
        ),
        (lambda: der(fresh_cert(rsa.generate_private_key(65537, 1024))), "XKEY-INVALID"),
        (lambda: der(fresh_cert(ed25519.Ed25519PrivateKey.generate())), "XKEY-INVALID"),
        (lambda: pem(fresh_cert(ec.generate_private_key(ec.SECP256R1())))[:300], "XKEY-INVALID"),
        (lambda: bytes(range(256))[::-1] * 8, "XKEY-INVALID"),
    ],
    ids=["other-address", "expired", "not-yet-valid", "rsa-1024", "ed25519", "truncated", "random"],
)
def test_bad_certificates_refused(running: RunningServer, make_material: Any, code: str) -> None:
    """Each bad certificate is refused with its code and a reason; nothing is stored."""
    reason = refused(running, make_material(), code)
    assert len(reason) > len(code) + 4


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("bob", "XKEY-ADDRESS", ""),
        ("revoked_subkey", "XKEY-INVALID", ""),
        ("expired_subkey", "XKEY-INVALID", ""),
        ("alice_25519_secret", "XKEY-INVALID", "secret key material"),
        ("alice_25519_secret_armored", "XKEY-INVALID", "secret key material"),
    ],
)
def test_bad_openpgp_keys_refused(
    running: RunningServer, pgp_keys: PgpKeys, name: str, code: str, reason: str
) -> None:
    """Another's key, a key whose only encryption subkey is revoked or expired, a secret key."""
    assert reason in refused(running, getattr(pgp_keys, name), code)


def test_oversize_literal_refused_before_continuation(running: RunningServer) -> None:
    """A 300 KiB literal gets NO [XKEY-TOOBIG] before "+": imaplib never sends it."""
    reason = refused(running, b"\x30" * (300 * 1024), "XKEY-TOOBIG")
    assert "262144" in reason


def test_refusal_reaches_the_audit_log(running: RunningServer) -> None:
    """A refusal is a JSON line in DIR/audit.jsonl with account, code and the peer address."""
    refused(running, b"not a key at all", "XKEY-INVALID")
    last = json.loads((running.data / "audit.jsonl").read_text().splitlines()[-1])
    record = last["audit"]
    assert record["event"] == "key.refused" and record["account"] == ALICE
    assert record["code"] == "XKEY-INVALID" and record["peer"].startswith("127.0.0.1:")
    assert record["time"].startswith(str(datetime.now(UTC).year))


# -- LIST, DELETE, POLICY, isolation ----------------------------------------------------------


def test_list_after_puts_and_a_delete(running: RunningServer, pgp_keys: PgpKeys) -> None:
    """LIST shows every key carol stored, the superseded and the deleted one RETIRED."""
    carol = "carol@example.org"
    client = connect(running, carol)
    first, second = (fresh_cert(ec.generate_private_key(ec.SECP256R1()), carol) for _ in "ab")
    fingerprints = []
    for cert in (first, second):
        typ, text, (stored, *superseded) = xkey(client, "PUT", literal=der(cert))
        assert typ == "OK", text
        # The second PUT also reports the first certificate, which it retired.
        assert [k.fingerprint for k in superseded] == fingerprints  # type: ignore[union-attr]
        assert [k.status for k in superseded] == ["RETIRED"] * len(fingerprints)  # type: ignore[union-attr]
        fingerprints.append(stored.fingerprint)  # type: ignore[union-attr]
    typ, text, (retired,) = xkey(client, "DELETE", fingerprints[1])
    assert typ == "OK" and retired.status == "RETIRED"  # type: ignore[union-attr]
    assert [(k.fingerprint, k.status) for k in keys_of(client)] == [
        (fingerprints[0], "RETIRED"),
        (fingerprints[1], "RETIRED"),
    ]
    typ, text, _ = xkey(client, "DELETE", "ab" * 32)
    assert typ == "NO" and text.startswith("[XKEY-NOKEY]")
    client.logout()


def test_policy_transitions(running: RunningServer, pgp_keys: PgpKeys) -> None:
    """OFF by default; ALWAYS without a key is NOKEY; with one it sticks; FORMAT and SIGN switch."""
    dave = "dave@example.org"
    client = connect(running, dave)

    def policy(*args: str) -> tuple[str, str, PolicyInfo | None]:
        typ, text, found = xkey(client, "POLICY", *args)
        return typ, text, found[0] if found else None  # type: ignore[return-value]

    assert policy()[2] == PolicyInfo("OFF", None, sign=False)
    typ, text, _ = policy("MODE", "ALWAYS")
    assert typ == "NO" and text.startswith("[XKEY-NOKEY]")
    assert policy()[2] == PolicyInfo("OFF", None, sign=False)
    cert = fresh_cert(ec.generate_private_key(ec.SECP256R1()), dave)
    assert xkey(client, "PUT", literal=der(cert))[0] == "OK"
    assert policy("MODE", "ALWAYS")[2] == PolicyInfo("ALWAYS", "SMIME", sign=False)
    typ, text, _ = policy("FORMAT", "OPENPGP")
    assert typ == "NO" and text.startswith("[XKEY-NOKEY]")
    assert policy("MODE", "OFF")[2] == PolicyInfo("OFF", "SMIME", sign=False)
    assert policy("FORMAT", "OPENPGP")[2] == PolicyInfo("OFF", "OPENPGP", sign=False)
    assert policy("FORMAT", "SMIME")[2] == PolicyInfo("OFF", "SMIME", sign=False)
    assert policy("SIGN", "ON")[2] == PolicyInfo("OFF", "SMIME", sign=True)
    assert policy()[2] == PolicyInfo("OFF", "SMIME", sign=True)
    assert policy("SIGN", "OFF")[2] == PolicyInfo("OFF", "SMIME", sign=False)
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        policy("MODE", "SOMETIMES")
    client.logout()


def test_signing_only_certificate(running: RunningServer) -> None:
    """A signing-only certificate is stored USAGE (SIGN) and cannot satisfy MODE ALWAYS."""
    erin = "erin@example.org"
    cert = fresh_cert(
        ec.generate_private_key(ec.SECP256R1()), erin, usage=key_usage(digital_signature=True)
    )
    client = connect(running, erin)
    typ, text, (stored, *_) = xkey(client, "PUT", literal=der(cert))
    assert typ == "OK" and stored.usage == ("SIGN",)  # type: ignore[union-attr]
    before = keystore_rows(running)
    typ, text, _ = xkey(client, "POLICY", "MODE", "ALWAYS")
    assert typ == "NO" and text.startswith("[XKEY-NOKEY]")
    assert keystore_rows(running) == before
    client.logout()


def test_accounts_cannot_see_each_other(running: RunningServer) -> None:
    """Bob lists none of Alice's keys, cannot retire them, and cannot store her certificate."""
    cert = der(fresh_cert(ec.generate_private_key(ec.SECP256R1())))
    alice = connect(running, ALICE)
    typ, _, (stored, *_) = xkey(alice, "PUT", literal=cert)
    assert typ == "OK"
    bob = connect(running, BOB)
    assert all(k.addresses == (BOB,) for k in keys_of(bob))
    assert stored.fingerprint not in {k.fingerprint for k in keys_of(bob)}  # type: ignore[union-attr]
    before = keystore_rows(running)
    typ, text, _ = xkey(bob, "DELETE", stored.fingerprint)  # type: ignore[union-attr]
    assert typ == "NO" and text.startswith("[XKEY-NOKEY]")
    assert keystore_rows(running) == before
    refused(running, cert, "XKEY-ADDRESS", user=BOB)
    assert stored in keys_of(alice)
    alice.logout()
    bob.logout()


def test_server_exits_cleanly_after_key_work(server: RunningServer, pgp_keys: PgpKeys) -> None:
    """After XKEY has used the thread pool, SIGTERM still ends twistd promptly and cleanly."""
    client = connect(server)
    assert xkey(client, "PUT", literal=pgp_keys.alice_25519)[0] == "OK"
    client.logout()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    # twistd re-raises the signal that stopped it once shut down (twisted.application.app).
    assert server.process.wait(timeout=15) == -signal.SIGTERM
    log = server.log.read_text()
    assert "Server Shut Down." in log and "Traceback" not in log
    assert (server.data / "audit.jsonl").stat().st_mode & 0o077 == 0


def test_smime_ca_option_requires_a_chain(tmp_path: Path) -> None:
    """With --smime-ca, a self-signed certificate is XKEY-INVALID and a CA-issued one stored."""
    data = tmp_path / "data"
    assert admin(data, "user", "add", ALICE, stdin=PASSWORD + "\n").returncode == 0
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
    server = RunningServer(
        data, free_port(), free_port(), extra_args=("--smime-ca", str(tmp_path / "ca.pem"))
    )
    server.start()
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        assert "chain" in refused(server, der(fresh_cert(key)), "XKEY-INVALID")
        client = connect(server)
        typ, text, _ = xkey(client, "PUT", literal=pem(fresh_cert(key, issuer=ca)))
        assert typ == "OK", text
        client.logout()
    finally:
        server.stop()


def test_unreadable_smime_ca_stops_the_start(tmp_path: Path) -> None:
    """A --smime-ca file without certificates is reported and the server does not start."""
    (tmp_path / "empty.pem").write_text("no certificates here\n")
    server = RunningServer(
        tmp_path / "data",
        free_port(),
        free_port(),
        extra_args=("--smime-ca", str(tmp_path / "empty.pem")),
    )
    with pytest.raises(RuntimeError, match="S/MIME trust anchors"):
        server.start()
