"""encrypt_armored: real gpg encrypts, a separate real gpg with the secret key decrypts."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.openpgp.gpgkeys import PgpTestKeys, subkeys
from transcoder.errors import ServerError
from transcoder.keys.model import StoredKey
from transcoder.openpgp.encrypt import CHUNK_SIZE, encrypt_armored
from transcoder.openpgp.errors import GpgFailed
from transcoder.openpgp.keyring import Keyring

KINDS = ["rsa", "x25519"]


def key_of(pgp: PgpTestKeys, kind: str) -> StoredKey:
    """The test key called ``kind``."""
    key = getattr(pgp, kind)
    assert isinstance(key, StoredKey)
    return key


def encrypt(keyring: Keyring, key: StoredKey, data: bytes, **options: object) -> bytes:
    """Armored encryption of ``data`` to ``key`` through the adapter, via the keyring's files."""
    entry = keyring.sync_key(key)
    out = io.BytesIO()
    written = encrypt_armored(
        io.BytesIO(data),
        out,
        [entry.recipient],
        keyring.home,
        keyrings=[entry.path],
        **options,  # type: ignore[arg-type]
    )
    assert written == len(out.getvalue())
    return out.getvalue()


def wrapper(tmp_path: Path, encrypt_body: str) -> str:
    """A gpg stand-in: real gpg for everything but ``--encrypt``, which runs ``encrypt_body``."""
    script = tmp_path / "fake-gpg"
    real = shutil.which("gpg")
    script.write_text(
        "#!/bin/sh\n"
        f'REAL="{real}"\n'
        'case " $* " in *" --encrypt "*) ;; *) exec "$REAL" "$@" ;; esac\n' + encrypt_body
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


class Endless(io.RawIOBase):
    """A readable stream of ``limit`` zero octets, produced on demand."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_decrypts_with_the_secret_key(
    pgp: PgpTestKeys, keyring: Keyring, kind: str
) -> None:
    """gpg --decrypt with the secret key (another home) gives back the input exactly."""
    data = b"line one\r\nline two\n\x00\xff binary \r" + os.urandom(5000)
    armored = encrypt(keyring, key_of(pgp, kind), data)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\r\n")
    assert armored.endswith(b"-----END PGP MESSAGE-----\r\n")
    assert pgp.decrypt(armored).plaintext == data


@pytest.mark.parametrize("kind", KINDS)
def test_aes256_uncompressed_to_the_exact_subkey(
    pgp: PgpTestKeys, keyring: Keyring, kind: str
) -> None:
    """The message uses AES-256, no compression packet, and the named encryption subkey."""
    key = key_of(pgp, kind)
    armored = encrypt(keyring, key, b"Subject: x\r\n\r\nhello\r\n" * 100)
    decryption = pgp.decrypt(armored)
    assert decryption.status("DECRYPTION_INFO")[1] == "9"  # RFC 9580 section 9.3: AES-256
    assert decryption.status("DECRYPTION_KEY")[0].lower() == subkeys(key)[0]
    assert "compressed packet" not in pgp.packets(armored)


def test_armor_has_crlf_line_ends_only(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """Every armor line ends in CRLF (it goes into a MIME message); no bare LF or CR."""
    armored = encrypt(keyring, pgp.x25519, os.urandom(10000))
    assert armored.count(b"\n") == armored.count(b"\r\n") == armored.count(b"\r") > 10


def test_empty_input(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """An empty input encrypts to a message that decrypts to nothing."""
    assert pgp.decrypt(encrypt(keyring, pgp.x25519, b"")).plaintext == b""


def test_lf_output_when_asked(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """crlf=False keeps gpg's own LF line ends."""
    armored = encrypt(keyring, pgp.x25519, b"data", crlf=False)
    assert b"\r" not in armored and pgp.decrypt(armored).plaintext == b"data"


class CountingFile(io.RawIOBase):
    """A write-only file that hashes what it gets and records the largest single write."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.writes = 0
        self.largest = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.writes += 1
        self.largest = max(self.largest, len(data))
        self.size += len(data)
        return len(data)


def test_50_mb_streams_in_constant_memory(
    pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path
) -> None:
    """50 MB in: Python memory peaks far below it, output arrives in chunk-sized writes."""
    source = tmp_path / "big"
    with source.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    entry = keyring.sync_key(pgp.x25519)
    sink = CountingFile()
    tracemalloc.start()
    try:
        with source.open("rb") as src:
            written = encrypt_armored(
                src,
                sink,  # type: ignore[arg-type]
                [entry.recipient],
                keyring.home,
                keyrings=[entry.path],
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == sink.size > 50 << 20
    assert peak < 4 << 20, f"peak {peak} octets"
    assert sink.writes > 500 and sink.largest <= 2 * CHUNK_SIZE
    # The same bytes again, this time to a file, and decrypted by gpg.
    armored, plain = tmp_path / "big.asc", tmp_path / "big.out"
    with source.open("rb") as src, armored.open("wb") as dst:
        encrypt_armored(src, dst, [entry.recipient], keyring.home, keyrings=[entry.path])
    pgp.decrypt_file(armored, plain)
    assert _sha256(plain) == _sha256(source)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_missing_binary(pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path) -> None:
    """A gpg binary that does not exist raises GpgFailed, a ServerError."""
    entry = keyring.sync_key(pgp.x25519)
    with pytest.raises(GpgFailed) as failure:
        encrypt_armored(
            io.BytesIO(b"x"),
            io.BytesIO(),
            [entry.recipient],
            keyring.home,
            str(tmp_path / "no-such-gpg"),
            keyrings=[entry.path],
        )
    assert isinstance(failure.value, ServerError)


def _fail_with(keyring: Keyring, key: StoredKey, binary: str, src: object) -> GpgFailed:
    entry = keyring.sync_key(key)
    out = io.BytesIO()
    with pytest.raises(GpgFailed) as failure:
        encrypt_armored(src, out, [entry.recipient], keyring.home, binary, keyrings=[entry.path])  # type: ignore[arg-type]
    return failure.value


def test_gpg_exiting_midway(pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path) -> None:
    """gpg that reads a little, writes half an armor and exits 2: GpgFailed with the exit status."""
    binary = wrapper(
        tmp_path,
        "head -c 1000 >/dev/null\n"
        "echo '[GNUPG:] BEGIN_ENCRYPTION 2 9' >&2\n"
        "echo '-----BEGIN PGP MESSAGE-----'\nexit 2\n",
    )
    failure = _fail_with(keyring, pgp.x25519, binary, io.BytesIO(os.urandom(100_000)))
    assert failure.returncode == 2
    assert "[GNUPG:] BEGIN_ENCRYPTION 2 9" in failure.status_lines
    assert "exit status 2" in failure.log_detail()


def test_killed_gpg(pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path) -> None:
    """gpg killed (SIGKILL) in the middle of a long input: GpgFailed, nothing hangs."""
    binary = wrapper(
        tmp_path,
        'exec 3<&0\n"$REAL" "$@" <&3 &\nchild=$!\n'
        "sleep 0.3\nkill -9 $child\nwait $child\nexit $?\n",
    )
    failure = _fail_with(keyring, pgp.x25519, binary, Endless(2 << 30))
    assert failure.returncode == 128 + 9  # the shell's status for a child killed by signal 9


def test_success_without_end_encryption_is_failure(
    pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path
) -> None:
    """Exit status 0 and an armor, but no END_ENCRYPTION status: still GpgFailed."""
    binary = wrapper(
        tmp_path,
        "cat >/dev/null\nprintf -- '-----BEGIN PGP MESSAGE-----\\n\\nAAAA\\n"
        "-----END PGP MESSAGE-----\\n'\nexit 0\n",
    )
    failure = _fail_with(keyring, pgp.x25519, binary, io.BytesIO(b"secret"))
    assert failure.returncode == 0
    assert "END_ENCRYPTION" in failure.reason


def test_broken_key_file(pgp: PgpTestKeys, keyring: Keyring, tmp_path: Path) -> None:
    """A keyring file that is not a key: GpgFailed carrying gpg's INV_RECP status line."""
    broken = tmp_path / "broken.gpg"
    broken.write_bytes(b"\x99\x01\x0dnot a key at all")
    with pytest.raises(GpgFailed) as failure:
        encrypt_armored(
            io.BytesIO(b"x"), io.BytesIO(), subkeys(pgp.x25519), keyring.home, keyrings=[broken]
        )
    assert any("INV_RECP" in line for line in failure.value.status_lines)
    assert "INV_RECP" in failure.value.log_detail()


def test_recipient_not_in_the_named_keyring(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """The RSA key's subkey is not found in the Curve25519 key's keyring file: GpgFailed."""
    entry = keyring.sync_key(pgp.x25519)
    keyring.sync_key(pgp.rsa)  # present in the home, but not named on the command line
    with pytest.raises(GpgFailed):
        encrypt_armored(
            io.BytesIO(b"x"), io.BytesIO(), subkeys(pgp.rsa), keyring.home, keyrings=[entry.path]
        )


class FailingFile(io.RawIOBase):
    """A file whose writes fail after the first one (a full disk)."""

    def __init__(self) -> None:
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.calls += 1
        if self.calls > 1:
            raise OSError(28, "No space left on device")
        return len(data)


def test_output_write_failure(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """A failing output file raises GpgFailed (gpg is drained, nothing hangs)."""
    entry = keyring.sync_key(pgp.x25519)
    with pytest.raises(GpgFailed) as failure:
        encrypt_armored(
            io.BytesIO(os.urandom(1 << 20)),
            FailingFile(),  # type: ignore[arg-type]
            [entry.recipient],
            keyring.home,
            keyrings=[entry.path],
        )
    assert "No space left" in failure.value.reason


@pytest.mark.parametrize(
    "recipients", [[], ["--homedir=/tmp"], ["../../etc/passwd"], ["abc"], ["g" * 40]]
)
def test_malformed_recipients_refused(keyring: Keyring, recipients: list[str]) -> None:
    """Only 40- or 64-digit hex fingerprints reach gpg's command line."""
    with pytest.raises(ValueError):
        encrypt_armored(io.BytesIO(b"x"), io.BytesIO(), recipients, keyring.home)


def test_eight_parallel_encryptions_on_one_home(pgp: PgpTestKeys, keyring: Keyring) -> None:
    """8 concurrent gpg processes on one home, two keys: every message decrypts to its input."""
    inputs = [os.urandom(20_000 + i) for i in range(8)]
    keys = [pgp.rsa if i % 2 else pgp.x25519 for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda kd: encrypt(keyring, *kd), zip(keys, inputs, strict=True)))
    assert [pgp.decrypt(armored).plaintext for armored in outputs] == inputs
