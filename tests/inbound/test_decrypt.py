"""Encrypted APPEND's decryption (issue 16) against real encryptors: messages made by
``openssl cms -encrypt`` (RSA and EC recipients, AES-CBC and AES-GCM) and ``gpg --encrypt`` to
the server's keys decrypt to the plaintext entity; to other keys they are left alone; a
damaged one to a server key is refused."""

from __future__ import annotations

import subprocess
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.inbound.streamed import write_streamed_cms_message
from tests.keyfactory import scratch_gpg_home
from transcoder.inbound import (
    Decrypted,
    DecryptedFile,
    NotDecryptable,
    decrypt_append,
    decrypt_append_file,
)
from transcoder.inbound.message import stored_message
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys_files import ServerKeyFiles

NOW = datetime.now(UTC) - timedelta(minutes=1)
MARKER = b"inbound-marker-7f3a"
ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello " + MARKER + b"\r\n"
OUTER = b"From: alice@example.org\r\nTo: alice@example.org\r\nSubject: draft\r\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerKeyFiles]:
    """Server keys: an RSA S/MIME key retired by an EC one, and an OpenPGP key."""
    root = tmp_path_factory.mktemp("sk") / "server-keys"
    keys = ServerKeyFiles(root)
    keys.ensure(NOW, algorithm="rsa")
    keys.rotate(KeyFormat.SMIME, NOW, algorithm="ec")
    yield keys


def cert_file(files: ServerKeyFiles, algorithm: str, tmp_path: Path) -> Path:
    key = next(
        k
        for k in files.decryption_keys(KeyFormat.SMIME)
        if k.algorithm.startswith(algorithm) and KeyUsage.ENCRYPT in k.usages
    )
    path = tmp_path / f"{algorithm}.pem"
    path.write_bytes(key.public)
    return path


def openssl_encrypt(cert: Path, cipher: str, tmp_path: Path) -> bytes:
    """What a client APPENDs: openssl's S/MIME output behind the outer header fields."""
    entity = tmp_path / "entity"
    entity.write_bytes(ENTITY)
    done = subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", f"-{cipher}", "-in", str(entity), str(cert)],
        capture_output=True,
        check=True,
    )
    return OUTER + done.stdout


@pytest.mark.parametrize("algorithm", ["rsa", "ec"])
@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-128-cbc", "aes-256-gcm"])
def test_openssl_cms_to_current_and_retired_keys_decrypts(
    files: ServerKeyFiles, tmp_path: Path, algorithm: str, cipher: str
) -> None:
    """To the retired RSA key and the current EC key, CBC and GCM: the stored message is
    the outer fields plus the inner entity, the marker in clear, no pkcs7-mime left."""
    message = openssl_encrypt(cert_file(files, algorithm, tmp_path), cipher, tmp_path)
    assert MARKER not in message
    result = decrypt_append(message, files)
    assert isinstance(result, Decrypted) and result.format is KeyFormat.SMIME
    # openssl's own outer fields (MIME-Version) stay; its Content-* fields are the inner's.
    assert result.message == OUTER + b"MIME-Version: 1.0\n" + ENTITY
    assert b"pkcs7" not in result.message


def test_cms_to_another_key_is_stored_as_sent(tmp_path: Path, files: ServerKeyFiles) -> None:
    """Encrypted to a certificate that is not the server's: not decrypted (None)."""
    other = ServerKeyFiles(tmp_path / "other", gpg_binary="no-such-gpg")
    other.ensure(NOW)
    message = openssl_encrypt(cert_file(other, "ec", tmp_path), "aes-256-cbc", tmp_path)
    assert decrypt_append(message, files) is None


def test_damaged_cms_to_the_server_is_refused(files: ServerKeyFiles, tmp_path: Path) -> None:
    """GCM ciphertext with a flipped octet, to the server's key: NotDecryptable."""
    import base64

    message = openssl_encrypt(cert_file(files, "ec", tmp_path), "aes-256-gcm", tmp_path)
    head, _, body = message.partition(b"\n\n")
    der = bytearray(base64.b64decode(b"".join(body.split())))
    der[-40] ^= 1  # inside the ciphertext or the tag
    damaged = head + b"\n\n" + base64.encodebytes(bytes(der))
    with pytest.raises(NotDecryptable):
        decrypt_append(damaged, files)


def pgp_mime(armored: bytes) -> bytes:
    boundary = b"b-42"
    return (
        OUTER
        + b'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; boundary="b-42";\r\n'
        + b' protocol="application/pgp-encrypted"\r\n\r\n--'
        + boundary
        + b"\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--"
        + boundary
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + armored
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def gpg_encrypt(public: bytes, extra: tuple[str, ...] = ()) -> bytes:
    with scratch_gpg_home("tc-inb-") as home:
        gpg = ["gpg", "--homedir", str(home.home), "--batch", "--trust-model", "always"]
        subprocess.run([*gpg, "--import"], input=public, capture_output=True, check=True)
        listing = subprocess.run(
            [*gpg, "--with-colons", "--list-keys"], capture_output=True, text=True, check=True
        ).stdout
        fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        done = subprocess.run(
            [*gpg, "--armor", *extra, "--encrypt", "-r", fpr],
            input=ENTITY,
            capture_output=True,
            check=True,
        )
    return done.stdout


def test_gpg_encrypt_to_the_server_decrypts(files: ServerKeyFiles) -> None:
    """gpg --encrypt to the published OpenPGP key, as PGP/MIME: decrypted to the entity."""
    key = files.current_for(KeyFormat.OPENPGP, KeyUsage.ENCRYPT)
    assert key is not None
    result = decrypt_append(pgp_mime(gpg_encrypt(key.public)), files)
    assert isinstance(result, Decrypted) and result.format is KeyFormat.OPENPGP
    assert result.message == OUTER + b"MIME-Version: 1.0\r\n" + ENTITY
    assert result.fingerprint == key.fingerprint


def test_gpg_encrypt_to_another_key_is_stored_as_sent(
    files: ServerKeyFiles, tmp_path: Path
) -> None:
    """To another OpenPGP key (a hidden recipient too): None, no decryption attempted."""
    other = ServerKeyFiles(tmp_path / "other")
    other.ensure(NOW)
    key = other.current_for(KeyFormat.OPENPGP, KeyUsage.ENCRYPT)
    assert key is not None
    assert decrypt_append(pgp_mime(gpg_encrypt(key.public)), files) is None
    hidden = gpg_encrypt(key.public, ("--throw-keyids",))
    assert decrypt_append(pgp_mime(hidden), files) is None


def test_protected_headers_inner_entity_replaces_the_outer() -> None:
    """RFC 9788: an inner entity whose Content-Type has hp= is the whole stored message."""
    inner = b'Subject: real\r\nContent-Type: text/plain; hp="cipher"\r\n\r\nbody\r\n'
    assert stored_message(OUTER, inner) == inner
    assert stored_message(OUTER, b"just text\r\n") == (
        OUTER + b"Content-Type: text/plain\r\n\r\njust text\r\n"
    )


def decrypt_file_traced(
    source: BinaryIO, files: ServerKeyFiles
) -> tuple[DecryptedFile | None, int]:
    """``decrypt_append_file(source, files)`` and the peak of Python's allocations during it."""
    tracemalloc.start()
    try:
        found = decrypt_append_file(source, files)
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-256-gcm"])
def test_large_streamed_cms_decrypts_in_constant_memory(
    files: ServerKeyFiles, tmp_path: Path, cipher: str
) -> None:
    """A 16 MiB entity encrypted with openssl cms -encrypt -stream (indefinite-length BER,
    the content in segments) decrypts from a file to the same octets while Python's
    allocations peak far below the message's size."""
    body = b"".join(b"line %08d of a large draft\r\n" % i for i in range(16 * 1024 * 1024 // 32))
    entity_file = tmp_path / "entity"
    entity_file.write_bytes(b"Content-Type: text/plain\r\n\r\n" + body)
    cert = cert_file(files, "ec", tmp_path)
    write_streamed_cms_message(tmp_path / "message", OUTER, entity_file, cert, cipher)
    with open(tmp_path / "message", "rb") as source:
        found, peak = decrypt_file_traced(source, files)
    assert found is not None and found.format is KeyFormat.SMIME
    with found.file:
        stored = found.file.read()
    assert stored.endswith(b"Content-Type: text/plain\r\n\r\n" + body)
    assert stored.startswith(OUTER)
    assert peak < 2 * 1024 * 1024, peak


def test_large_gpg_message_decrypts_from_files(files: ServerKeyFiles, tmp_path: Path) -> None:
    """An 8 MiB entity gpg encrypted to the server: decrypted file to file, Python's
    allocations staying well below the message's size."""
    import io

    key = files.current_for(KeyFormat.OPENPGP, KeyUsage.ENCRYPT)
    assert key is not None
    body = b"x" * 70 + b"\r\n"
    entity_bytes = b"Content-Type: text/plain\r\n\r\n" + body * (8 * 1024 * 1024 // 72)
    with scratch_gpg_home("tc-inb-") as home:
        gpg = ["gpg", "--homedir", str(home.home), "--batch", "--trust-model", "always"]
        subprocess.run([*gpg, "--import"], input=key.public, capture_output=True, check=True)
        armored = subprocess.run(
            [*gpg, "--armor", "--compress-algo", "none", "--encrypt", "-r", key.subkeys[0]],
            input=entity_bytes,
            capture_output=True,
            check=True,
        ).stdout
    found, peak = decrypt_file_traced(io.BytesIO(pgp_mime(armored)), files)
    assert found is not None
    with found.file:
        assert found.file.read().endswith(entity_bytes)
    assert peak < 2 * 1024 * 1024, peak
