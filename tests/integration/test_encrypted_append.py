"""Encrypted APPEND on the real server (issue 16): what a client encrypts with
``openssl cms -encrypt`` or ``gpg --encrypt`` to the keys ``transcoder-client server-keys``
saved is stored in clear (the Maildir file and SEARCH BODY see it), APPENDUID answered, the
decryption audited; after a rotation the retired key still decrypts; ciphertext to other
keys is stored as sent; ciphertext to the server that does not decrypt is refused."""

from __future__ import annotations

import imaplib
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, RunningServer, admin
from tests.integration.test_client import client
from tests.keyfactory import scratch_gpg_home

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"
OUTER = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: draft\r\n"


def entity(marker: str) -> bytes:
    return b"Content-Type: text/plain\r\n\r\nthe marker is " + marker.encode() + b"\r\n"


def server_keys(server: RunningServer, folder: Path) -> dict[str, Path]:
    done = client(server, "server-keys", "--dir", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    return {f"{k['format']}-{k['usage'][0]}": Path(k["file"]) for k in json.loads(done.stdout)}


def openssl_encrypted(cert: Path, marker: str, cipher: str, tmp_path: Path) -> bytes:
    plain = tmp_path / f"{marker}.txt"
    plain.write_bytes(entity(marker))
    out = subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", f"-{cipher}", "-in", str(plain), str(cert)],
        capture_output=True,
        check=True,
    ).stdout
    return OUTER + out


def gpg_encrypted(public: Path, marker: str) -> bytes:
    with scratch_gpg_home("tc-eapp-") as home:
        gpg = ["gpg", "--homedir", str(home.home), "--batch", "--trust-model", "always"]
        subprocess.run([*gpg, "--import", str(public)], capture_output=True, check=True)
        listing = subprocess.run(
            [*gpg, "--with-colons", "--list-keys"], capture_output=True, text=True, check=True
        ).stdout
        fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        armored = subprocess.run(
            [*gpg, "--armor", "--encrypt", "-r", fpr],
            input=entity(marker),
            capture_output=True,
            check=True,
        ).stdout
    return (
        OUTER + b'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; boundary="zz";'
        b' protocol="application/pgp-encrypted"\r\n\r\n--zz\r\n'
        b"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--zz\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + armored + b"\r\n--zz--\r\n"
    )


def login(server: RunningServer) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
    imap.login(ALICE, PASSWORD)
    return imap


def append(imap: imaplib.IMAP4, message: bytes) -> tuple[str, str]:
    typ, data = imap.append("INBOX", "(\\Seen)", None, message)
    return typ, data[-1].decode() if data and data[-1] else ""


def stored_files(server: RunningServer) -> list[bytes]:
    cur = server.data / "mail" / ALICE / "cur"
    return [p.read_bytes() for p in sorted(cur.iterdir())]


def search_body(imap: imaplib.IMAP4, marker: str) -> list[bytes]:
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", "BODY", marker)
    assert typ == "OK"
    return data[0].split()


def audit_lines(server: RunningServer) -> list[dict[str, object]]:
    lines = (server.data / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line).get("audit", {}) for line in lines]
    return [r for r in records if r.get("event") == "append-decrypted"]


@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-128-gcm"])
def test_openssl_encrypted_append_is_stored_in_clear(
    server: RunningServer, tmp_path: Path, cipher: str
) -> None:
    """To the published EC encryption certificate: APPENDUID answered, the Maildir file holds
    the outer fields and the inner entity (no pkcs7-mime), SEARCH BODY finds the marker, the
    flags are as sent, and audit.jsonl has one append-decrypted line with the fingerprint."""
    keys = server_keys(server, tmp_path / "keys")
    marker = f"cms-{cipher}-marker"
    imap = login(server)
    try:
        typ, text = append(imap, openssl_encrypted(keys["SMIME-ENCRYPT"], marker, cipher, tmp_path))
        assert typ == "OK" and re.search(r"\[APPENDUID \d+ 1\]", text), text
        (stored,) = stored_files(server)
        assert marker.encode() in stored and b"pkcs7" not in stored
        assert stored.startswith(OUTER)
        assert search_body(imap, marker) == [b"1"]
        typ, data = imap.uid("FETCH", "1", "(FLAGS)")
        assert b"\\Seen" in data[0]
    finally:
        imap.logout()
    (record,) = audit_lines(server)
    fingerprint = (
        subprocess.run(
            [
                "openssl",
                "x509",
                "-in",
                str(keys["SMIME-ENCRYPT"]),
                "-noout",
                "-fingerprint",
                "-sha256",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.split("=")[1]
        .strip()
        .replace(":", "")
        .lower()
    )
    assert record["account"] == ALICE and record["fingerprint"] == fingerprint
    assert record["format"] == "SMIME" and record["peer"]


def test_gpg_encrypted_append_is_stored_in_clear(server: RunningServer, tmp_path: Path) -> None:
    """gpg --encrypt to the published OpenPGP key, as PGP/MIME: stored in clear, found."""
    keys = server_keys(server, tmp_path / "keys")
    imap = login(server)
    try:
        typ, text = append(imap, gpg_encrypted(keys["OPENPGP-ENCRYPT"], "pgp-marker-1"))
        assert typ == "OK" and "APPENDUID" in text
        (stored,) = stored_files(server)
        assert b"pgp-marker-1" in stored and b"PGP MESSAGE" not in stored
        assert search_body(imap, "pgp-marker-1") == [b"1"]
    finally:
        imap.logout()
    assert [r["format"] for r in audit_lines(server)] == ["OPENPGP"]


def test_retired_keys_still_decrypt_foreign_ciphertext_is_kept(
    server: RunningServer, tmp_path: Path
) -> None:
    """After rotate smime and rotate openpgp, APPENDs to the old keys still decrypt; a
    message to a key that is not the server's is stored byte for byte as sent."""
    old = server_keys(server, tmp_path / "old")
    for fmt in ("smime", "openpgp"):
        assert admin(server.data, "server-key", "rotate", fmt).returncode == 0
    new = server_keys(server, tmp_path / "new")
    assert new["SMIME-ENCRYPT"].read_bytes() != old["SMIME-ENCRYPT"].read_bytes()
    foreign_dir = tmp_path / "foreign"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=someone",
            "-keyout",
            str(tmp_path / "f.key"),
            "-out",
            str(tmp_path / "f.pem"),
            "-days",
            "2",
        ],
        capture_output=True,
        check=True,
    )
    foreign_dir.mkdir()
    foreign = openssl_encrypted(tmp_path / "f.pem", "foreign-marker", "aes-256-cbc", tmp_path)
    imap = login(server)
    try:
        for message in (
            openssl_encrypted(old["SMIME-ENCRYPT"], "old-cms-marker", "aes-256-cbc", tmp_path),
            gpg_encrypted(old["OPENPGP-ENCRYPT"], "old-pgp-marker"),
            foreign,
        ):
            typ, text = append(imap, message)
            assert typ == "OK", text
        stored = stored_files(server)
        assert b"old-cms-marker" in stored[0] and b"old-pgp-marker" in stored[1]
        assert stored[2] == foreign.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert search_body(imap, "foreign-marker") == []
    finally:
        imap.logout()


def test_damaged_ciphertext_to_the_server_is_refused(server: RunningServer, tmp_path: Path) -> None:
    """A GCM message to the server's key with a flipped ciphertext octet: NO [CANNOT],
    nothing stored."""
    import base64

    keys = server_keys(server, tmp_path / "keys")
    message = openssl_encrypted(keys["SMIME-ENCRYPT"], "bad", "aes-256-gcm", tmp_path)
    head, _, body = message.partition(b"\n\n")
    der = bytearray(base64.b64decode(b"".join(body.split())))
    der[-40] ^= 1
    imap = login(server)
    try:
        typ, text = append(imap, head + b"\n\n" + base64.encodebytes(bytes(der)))
        assert typ == "NO" and text.startswith("[CANNOT]"), text
    finally:
        imap.logout()
    assert stored_files(server) == []


def test_signing_key_never_decrypts(server: RunningServer, tmp_path: Path) -> None:
    """A message encrypted to the server's *signing* certificate is not the server's to
    open (dual key pairs): stored as sent, no audit record."""
    keys = server_keys(server, tmp_path / "keys")
    message = openssl_encrypted(keys["SMIME-SIGN"], "to-signing-key", "aes-256-cbc", tmp_path)
    imap = login(server)
    try:
        typ, text = append(imap, message)
        assert typ == "OK", text
        (stored,) = stored_files(server)
        assert b"to-signing-key" not in stored and b"pkcs7-mime" in stored
    finally:
        imap.logout()
    assert audit_lines(server) == []


def test_hoster_keys_given_at_start_are_used(tmp_path: Path) -> None:
    """--server-smime-cert/--server-smime-key (an RSA key of the hoster's) are imported at
    the first start, published, and decrypt what openssl encrypts to them; a second start
    with the same options imports nothing again."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.integration.conftest import free_port
    from transcoder.keys.model import KeyUsage
    from transcoder.keys.server_keys import generate_smime, private_pem, utc_now

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = generate_smime(KeyUsage.ENCRYPT, utc_now(), key, name="hoster")
    (tmp_path / "enc.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "enc.key").write_bytes(private_pem(key))
    data = tmp_path / "data"
    assert admin(data, "user", "add", ALICE, stdin=PASSWORD + "\n").returncode == 0
    options = (
        "--server-smime-cert",
        str(tmp_path / "enc.pem"),
        "--server-smime-key",
        str(tmp_path / "enc.key"),
    )
    running = RunningServer(data, free_port(), free_port(), options)
    running.start()
    try:
        keys = server_keys(running, tmp_path / "keys")
        assert keys["SMIME-ENCRYPT"].read_bytes() == (tmp_path / "enc.pem").read_bytes()
        imap = login(running)
        try:
            message = openssl_encrypted(
                tmp_path / "enc.pem", "hoster-marker", "aes-256-cbc", tmp_path
            )
            typ, text = append(imap, message)
            assert typ == "OK", text
            assert search_body(imap, "hoster-marker") == [b"1"]
        finally:
            imap.logout()
        running.restart()
        listing = admin(data, "server-key", "list").stdout.splitlines()
        assert sum("(imported)" in line for line in listing) == 1, listing
    finally:
        running.stop()
