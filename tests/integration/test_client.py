"""``transcoder-client`` and its library against the real server (twistd) on loopback.

The CLI runs as a real subprocess, TLS is verified against the server's own
generated certificate (``--cafile``), the certificates are made with
cryptography and the OpenPGP key with the real gpg.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.integration.conftest import PASSWORD, REPO, RunningServer
from tests.keyfactory import scratch_gpg_home
from tests.keys.certs import der, make_cert, pem
from tests.keys.conftest import UID_ALICE
from transcoder.client import KeyInfo, PolicyInfo, XKeyClient, XKeyError

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"


@dataclass(frozen=True)
class KeyFiles:
    """Key material written to files, as a user would have it."""

    alice_cert: Path
    alice_cert_der: bytes
    bob_cert: Path
    alice_pgp: Path
    alice_pgp_fpr: str


def _now_cert(address: str, key: Any) -> x509.Certificate:
    """A certificate for ``address`` valid from yesterday for a year (the server's real clock)."""
    now = datetime.now(UTC)
    return make_cert(
        key,
        sans=(address,),
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=365),
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyFiles]:
    """Alice's RSA certificate (PEM), an EC one (DER), Bob's, and Alice's binary OpenPGP key."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    folder = tmp_path_factory.mktemp("client-keys")
    alice = _now_cert(ALICE, rsa.generate_private_key(65537, 2048))
    alice_ec = _now_cert(ALICE, ec.generate_private_key(ec.SECP256R1()))
    bob = _now_cert("bob@example.org", ec.generate_private_key(ec.SECP256R1()))
    (folder / "alice.pem").write_bytes(pem(alice))
    (folder / "bob.pem").write_bytes(pem(bob))
    with scratch_gpg_home("client-gpg-") as gpg:
        fpr = gpg.generate(UID_ALICE, "future-default")
        (folder / "alice.gpg").write_bytes(gpg.export(fpr))
    yield KeyFiles(
        alice_cert=folder / "alice.pem",
        alice_cert_der=der(alice_ec),
        bob_cert=folder / "bob.pem",
        alice_pgp=folder / "alice.gpg",
        alice_pgp_fpr=fpr,
    )


def cafile(server: RunningServer) -> Path:
    """The server's self-signed certificate, trusted explicitly as a CA file."""
    return server.data / "tls" / "server.crt"


def client(
    server: RunningServer,
    *args: str,
    user: str = ALICE,
    password: str = PASSWORD,
    connection: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``transcoder-client`` as a user would; by default STARTTLS, verifying the
    server's certificate with ``--cafile``."""
    if connection is None:
        connection = [
            "--starttls",
            "--port",
            str(server.imap_port),
            "--cafile",
            str(cafile(server)),
        ]
    command = [sys.executable, "-m", "transcoder.client", "--host", "127.0.0.1", *connection]
    return subprocess.run(
        [*command, "--user", user, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TRANSCODER_PASSWORD": password},
        timeout=60,
        check=False,
    )


def listed(server: RunningServer) -> list[dict[str, object]]:
    """``keys --json``, parsed."""
    done = client(server, "keys", "--json")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


def test_provision_list_policy_retire(server: RunningServer, keys: KeyFiles) -> None:
    """A user provisions a certificate and an OpenPGP key, sees both, sets policy, retires one."""
    for path in (keys.alice_cert, keys.alice_pgp):
        done = client(server, "provision", str(path))
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
    stored = {str(k["format"]): k for k in listed(server)}
    assert sorted(stored) == ["OPENPGP", "SMIME"]
    assert str(stored["OPENPGP"]["fingerprint"]).upper() == keys.alice_pgp_fpr
    assert all(k["status"] == "ACTIVE" and k["addresses"] == [ALICE] for k in stored.values())
    lines = client(server, "keys").stdout.splitlines()
    assert sorted(line.split()[1] for line in lines) == ["OPENPGP", "SMIME"]

    done = client(server, "policy", "--format", "openpgp", "--mode", "always")
    assert (done.returncode, done.stdout) == (
        0,
        "mode: ALWAYS\nformat: OPENPGP\nsign: OFF\n",
    ), done.stderr
    done = client(server, "policy", "--format", "smime", "--json")
    assert json.loads(done.stdout) == {"mode": "ALWAYS", "format": "SMIME", "sign": False}
    # SIGN ON (issue 16) changes every view under MODE ALWAYS: said on stderr.
    done = client(server, "policy", "--sign", "on")
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "sign: ON"), done.stderr
    assert "new UIDVALIDITY" in done.stderr
    assert client(server, "policy", "--json").stdout.strip().endswith('"sign": true}')

    done = client(server, "retire", keys.alice_pgp_fpr)
    assert done.returncode == 0, done.stderr
    status = {k["format"]: k["status"] for k in listed(server)}
    assert status == {"SMIME": "ACTIVE", "OPENPGP": "RETIRED"}


def test_cert_for_another_address_exits_1(server: RunningServer, keys: KeyFiles) -> None:
    """Bob's certificate provisioned by Alice: exit 1, one XKEY-ADDRESS line, nothing stored."""
    done = client(server, "provision", str(keys.bob_cert))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("transcoder-client: XKEY-ADDRESS: ")
    assert done.stderr.count("\n") == 1
    assert listed(server) == []


def test_refusals_exit_1(server: RunningServer, keys: KeyFiles) -> None:
    """Policy ALWAYS without a key and retiring an unknown key exit 1 with XKEY-NOKEY."""
    done = client(server, "policy", "--mode", "always")
    assert done.returncode == 1
    assert done.stderr.startswith("transcoder-client: XKEY-NOKEY: ")
    done = client(server, "retire", "00" * 20)
    assert done.returncode == 1
    assert done.stderr.startswith("transcoder-client: XKEY-NOKEY: ")


def test_implicit_tls_and_certificate_verification(server: RunningServer) -> None:
    """--tls verifies the certificate: trusted via --cafile, refused (exit 2) without it,
    accepted with a warning under --insecure."""
    tls = ["--tls", "--port", str(server.imaps_port)]
    done = client(server, "keys", connection=[*tls, "--cafile", str(cafile(server))])
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = client(server, "keys", connection=tls)
    assert done.returncode == 2
    assert done.stderr.startswith("transcoder-client: TLS: ")
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    done = client(server, "policy", connection=[*tls, "--insecure"])
    assert (done.returncode, done.stdout) == (
        0,
        "mode: OFF\nformat: not set yet (the first key you provision sets it)\nsign: OFF\n",
    ), done.stderr
    assert "warning: --insecure" in done.stderr


def test_wrong_password_exits_2(server: RunningServer) -> None:
    """A refused login is a connection-level failure: exit 2 with the server's code."""
    done = client(server, "keys", password="wrong")
    assert done.returncode == 2
    assert done.stderr.startswith("transcoder-client: AUTHENTICATIONFAILED: ")


def test_plaintext_to_loopback(server: RunningServer) -> None:
    """With --plain the client logs in without TLS to a loopback server (allowed there)."""
    connection = ["--plain", "--port", str(server.imap_port)]
    done = client(server, "policy", "--json", connection=connection)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"mode": "OFF", "format": None, "sign": False}


def tls_context(server: RunningServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile(server)))


def test_library_api(server: RunningServer, keys: KeyFiles) -> None:
    """The library provisions DER, lists, sets and reads policy, and raises XKeyError with codes."""
    with XKeyClient.connect(
        "127.0.0.1", server.imap_port, ALICE, PASSWORD, "starttls", tls_context(server)
    ) as xkey:
        stored = xkey.provision(keys.alice_cert_der)
        assert isinstance(stored, KeyInfo)
        assert (stored.format, stored.addresses, stored.status) == ("SMIME", (ALICE,), "ACTIVE")
        assert stored.not_after is not None and stored.not_after > datetime.now(UTC)
        assert xkey.keys() == [stored]
        assert xkey.policy() == PolicyInfo("OFF", "SMIME", sign=False)
        assert xkey.set_policy(mode="always") == PolicyInfo("ALWAYS", "SMIME", sign=False)
        with pytest.raises(XKeyError) as caught:
            xkey.provision(keys.bob_cert.read_bytes())
        assert (caught.value.code, caught.value.response) == ("XKEY-ADDRESS", "NO")
        with pytest.raises(XKeyError) as caught:
            xkey.provision(b"\x00\x01 not a key \r\n")
        assert caught.value.code == "XKEY-INVALID"
        xkey.retire(stored.fingerprint)
        stored_now = xkey.keys()
        assert [k.status for k in stored_now] == ["RETIRED"]


def test_library_wraps_an_existing_session(server: RunningServer, keys: KeyFiles) -> None:
    """XKeyClient wraps an imaplib session the application opened, in the selected state too,
    and another account's session does not see Alice's keys."""
    assert client(server, "provision", str(keys.alice_cert)).returncode == 0
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    imap.starttls(ssl_context=tls_context(server))
    imap.login("bob@example.org", PASSWORD)
    imap.select("INBOX")
    xkey = XKeyClient(imap)
    xkey.require_capability()
    assert xkey.keys() == []
    assert xkey.policy() == PolicyInfo("OFF", None, sign=False)
    xkey.close()
    xkey.close()  # idempotent


def test_example_script(server: RunningServer, keys: KeyFiles) -> None:
    """examples/provision_key.py provisions a key over TLS and turns transcoding on."""
    script = [sys.executable, str(REPO / "examples" / "provision_key.py")]
    done = subprocess.run(
        [
            *script,
            "127.0.0.1",
            str(server.imaps_port),
            ALICE,
            str(keys.alice_pgp),
            str(cafile(server)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TRANSCODER_PASSWORD": PASSWORD, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert keys.alice_pgp_fpr in done.stdout.upper()
    assert done.stdout.splitlines()[-1] == "policy: mode ALWAYS, format OPENPGP"


def test_configure_then_short_form_and_replacing_a_key(
    server: RunningServer, keys: KeyFiles, tmp_path: Path
) -> None:
    """After the one setup step (configure: port, --cafile server.crt, user) the short form
    provisions over STARTTLS; a second certificate is not stored without a terminal to ask
    on, and --replace stores it and shows the first one RETIRED."""
    env = {**os.environ, "HOME": str(tmp_path), "TRANSCODER_PASSWORD": PASSWORD}
    env.pop("XDG_CONFIG_HOME", None)
    base = [sys.executable, "-m", "transcoder.client"]

    def short(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # no terminal: nothing can be asked
            timeout=60,
            check=False,
        )

    setup = short(
        "configure", "--port", str(server.imap_port), "--cafile", str(cafile(server)),
        "--user", ALICE,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    first = short("provision", str(keys.alice_cert))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("stored:     ") and "superseded" not in first.stdout
    second_cert = _now_cert(ALICE, ec.generate_private_key(ec.SECP256R1()))
    second = tmp_path / "second.pem"
    second.write_bytes(pem(second_cert))
    refused = short("provision", str(second))
    assert refused.returncode == 1
    assert "this key replaces your active SMIME key" in refused.stderr
    assert refused.stderr.rstrip().endswith("no terminal to ask on; pass --replace to replace it")
    assert [k["status"] for k in listed(server)] == ["ACTIVE"]
    replaced = short("provision", "--replace", str(second))
    assert replaced.returncode == 0, replaced.stderr
    stored, superseded = replaced.stdout.splitlines()
    assert stored.startswith("stored:     ") and " ACTIVE " in stored
    assert superseded.startswith("superseded: ") and " RETIRED " in superseded
    assert [k["status"] for k in listed(server)] == ["RETIRED", "ACTIVE"]
