"""The server's own key pairs (issue 16) on the real server: generated on first start,
published by XKEY SERVER, saved by ``transcoder-client server-keys``, rotated, retired and
imported with ``transcoder-admin server-key``; checked with openssl and gpg."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.conftest import RunningServer, admin
from tests.integration.test_client import client
from tests.keyfactory import scratch_gpg_home
from transcoder.keys.model import KeyUsage
from transcoder.keys.server_keys import generate_smime, private_pem

pytestmark = pytest.mark.integration


def saved(server: RunningServer, folder: Path) -> list[dict[str, object]]:
    """``transcoder-client server-keys --dir folder --json``, parsed."""
    done = client(server, "server-keys", "--dir", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sha256_fingerprint(pem_file: Path) -> str:
    text = openssl("x509", "-in", str(pem_file), "-noout", "-fingerprint", "-sha256")
    return text.split("=", 1)[1].strip().replace(":", "").lower()


def key_usage(pem_file: Path) -> str:
    text = openssl("x509", "-in", str(pem_file), "-noout", "-ext", "keyUsage")
    return text.split("\n", 1)[1].strip()  # the line after "X509v3 Key Usage: critical"


def test_first_start_generates_dual_keys_private_0600(server: RunningServer) -> None:
    """DIR/server-keys/ holds a current S/MIME encryption and signing key and one OpenPGP
    key, private files 0600 in a 0700 directory; admin lists the three with their dates."""
    root = server.data / "server-keys"
    assert root.stat().st_mode & 0o777 == 0o700
    private = sorted(root.glob("*.key"))
    assert len(private) == 3
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in private)
    listing = admin(server.data, "server-key", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 3 and all(" current (generated)" in ln for ln in lines), lines
    assert [ln.split()[:2] for ln in lines] == [
        ["SMIME", "ENCRYPT"],
        ["SMIME", "SIGN"],
        ["OPENPGP", "ENCRYPT,SIGN"],
    ]


def test_xkey_server_publishes_keys_the_client_saves(server: RunningServer, tmp_path: Path) -> None:
    """server-keys saves PEM certificates whose openssl fingerprint and keyUsage are as
    published (encryption: keyAgreement only; signing: digitalSignature only), and an
    armored OpenPGP key gpg reads as separate encryption and signing subkeys."""
    keys = saved(server, tmp_path / "keys")
    assert [(k["format"], k["usage"]) for k in keys] == [
        ("SMIME", ["ENCRYPT"]),
        ("SMIME", ["SIGN"]),
        ("OPENPGP", ["ENCRYPT", "SIGN"]),
    ]
    encrypt, sign, pgp = (Path(str(k["file"])) for k in keys)
    assert sha256_fingerprint(encrypt) == keys[0]["fingerprint"]
    assert sha256_fingerprint(sign) == keys[1]["fingerprint"]
    assert key_usage(encrypt) == "Key Agreement"
    assert key_usage(sign) == "Digital Signature"
    with scratch_gpg_home("tc-skt-") as gpg_home:
        home = gpg_home.home
        gpg = ["gpg", "--homedir", str(home), "--batch"]
        subprocess.run([*gpg, "--import", str(pgp)], check=True, capture_output=True)
        out = subprocess.run(
            [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True
        ).stdout
    records = [ln.split(":") for ln in out.splitlines() if ln.startswith(("pub:", "sub:"))]
    assert [r[11] for r in records] == ["cESC", "e", "s"]  # primary: certify only
    fprs = re.findall(r"^fpr:+([0-9A-F]{40}):", out, re.MULTILINE)
    assert [f.lower() for f in fprs] == [keys[2]["fingerprint"], *keys[2]["subkeys"]]  # type: ignore[misc]
    assert all(k["not_after"] and k["not_before"] for k in keys)


def test_rotate_then_retire_keep_the_history(server: RunningServer, tmp_path: Path) -> None:
    """After rotate smime XKEY SERVER shows new S/MIME keys; the old ones stay listed as
    retired with a date; retire takes a key out and the next start generates its successor."""
    before = saved(server, tmp_path / "before")
    rotated = admin(server.data, "server-key", "rotate", "smime", "--algorithm", "rsa")
    assert rotated.returncode == 0, rotated.stderr
    after = saved(server, tmp_path / "after")
    assert after[0]["fingerprint"] != before[0]["fingerprint"]
    assert after[1]["fingerprint"] != before[1]["fingerprint"]
    assert after[2]["fingerprint"] == before[2]["fingerprint"]
    assert key_usage(Path(str(after[0]["file"]))) == "Key Encipherment"  # RSA now
    lines = admin(server.data, "server-key", "list").stdout.splitlines()
    assert len(lines) == 5
    old = next(ln for ln in lines if str(before[0]["fingerprint"]) in ln)
    assert re.search(r" retired \d{4}-\d\d-\d\dT", old), old
    retired = admin(server.data, "server-key", "retire", str(after[2]["fingerprint"]))
    assert retired.returncode == 0, retired.stderr
    assert [k["format"] for k in saved(server, tmp_path / "none")] == ["SMIME", "SMIME"]
    server.restart()
    regenerated = saved(server, tmp_path / "again")
    assert regenerated[2]["format"] == "OPENPGP"
    assert regenerated[2]["fingerprint"] != after[2]["fingerprint"]


def test_import_refuses_a_certificate_with_extra_usages(
    server: RunningServer, tmp_path: Path
) -> None:
    """import smime-sign of an encryption certificate is refused (exit 1, names the bits);
    the hoster's signing certificate is accepted and becomes the one XKEY SERVER shows."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(private_pem(key))
    from cryptography.hazmat.primitives import serialization

    for usage, name in ((KeyUsage.ENCRYPT, "enc.pem"), (KeyUsage.SIGN, "sign.pem")):
        cert = generate_smime(usage, now, key, name="hoster")
        (tmp_path / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    args = ("server-key", "import", "smime-sign")
    refused = admin(server.data, *args, str(tmp_path / "enc.pem"), str(tmp_path / "k.pem"))
    assert refused.returncode == 1
    assert "digitalSignature" in refused.stderr and "keyAgreement" in refused.stderr
    done = admin(server.data, *args, str(tmp_path / "sign.pem"), str(tmp_path / "k.pem"))
    assert done.returncode == 0, done.stderr
    keys = saved(server, tmp_path / "keys")
    assert sha256_fingerprint(Path(str(keys[1]["file"]))) == sha256_fingerprint(
        tmp_path / "sign.pem"
    )


def test_import_openpgp_needs_separate_subkeys(server: RunningServer, tmp_path: Path) -> None:
    """gpg's default key (the primary key signs) is refused for want of a signing subkey;
    a key with separate encryption and signing subkeys is imported, becomes the published
    OpenPGP key, and the old one is listed retired."""
    with scratch_gpg_home("tc-skimp-") as gpg_home:
        gpg = ["gpg", "--homedir", str(gpg_home.home), "--batch", "--pinentry-mode", "loopback"]
        quiet = [*gpg, "--passphrase", ""]
        subprocess.run(
            [*quiet, "--quick-gen-key", "Hoster <hoster@example.org>", "future-default", "default"],
            capture_output=True,
            check=True,
        )
        default = subprocess.run(
            [*quiet, "--armor", "--export-secret-keys"], capture_output=True, check=True
        ).stdout
        (tmp_path / "default.asc").write_bytes(default)
    refused = admin(server.data, "server-key", "import", "openpgp", str(tmp_path / "default.asc"))
    assert refused.returncode == 1 and "signing subkey" in refused.stderr, refused.stderr
    before = saved(server, tmp_path / "before")[2]
    # A certification-only primary key with an encryption and a signing subkey passes.
    with scratch_gpg_home("tc-skimp2-") as gpg_home:
        gpg = ["gpg", "--homedir", str(gpg_home.home), "--batch", "--pinentry-mode", "loopback"]
        quiet = [*gpg, "--passphrase", ""]
        subprocess.run(
            [*quiet, "--quick-gen-key", "Hoster <hoster@example.org>", "ed25519", "cert", "2y"],
            capture_output=True,
            check=True,
        )
        fpr = (
            subprocess.run(
                [*gpg, "--with-colons", "--list-keys"], capture_output=True, text=True, check=True
            )
            .stdout.split("fpr:::::::::")[1]
            .split(":")[0]
        )
        for algo, use in (("cv25519", "encr"), ("ed25519", "sign")):
            subprocess.run(
                [*quiet, "--quick-add-key", fpr, algo, use, "2y"], capture_output=True, check=True
            )
        (tmp_path / "good.asc").write_bytes(
            subprocess.run(
                [*quiet, "--armor", "--export-secret-keys"], capture_output=True, check=True
            ).stdout
        )
    done = admin(server.data, "server-key", "import", "openpgp", str(tmp_path / "good.asc"))
    assert done.returncode == 0, done.stderr
    after = saved(server, tmp_path / "after")[2]
    assert after["fingerprint"] == fpr.lower() != before["fingerprint"]
    lines = admin(server.data, "server-key", "list").stdout.splitlines()
    old = next(ln for ln in lines if str(before["fingerprint"]) in ln)
    assert " retired " in old and "(generated)" in old


def test_library_reads_the_server_keys(server: RunningServer) -> None:
    """XKeyClient.server_keys(): the same keys as the CLI, material included."""
    import ssl

    from tests.integration.conftest import PASSWORD
    from transcoder.client import ServerKeyInfo, XKeyClient

    context = ssl.create_default_context(cafile=str(server.data / "tls" / "server.crt"))
    with XKeyClient.connect(
        "127.0.0.1", server.imap_port, "alice@example.org", PASSWORD, ssl_context=context
    ) as xkey:
        keys = xkey.server_keys()
    assert all(isinstance(k, ServerKeyInfo) for k in keys)
    assert [k.file_name() for k in keys] == [
        "server-smime-encrypt.pem",
        "server-smime-sign.pem",
        "server-openpgp.asc",
    ]
    assert keys[0].material.startswith("-----BEGIN CERTIFICATE-----")
    assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in keys[2].material
    assert len(keys[2].subkeys) == 2
