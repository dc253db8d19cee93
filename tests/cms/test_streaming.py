"""Streaming: constant memory, any kind of source, clear errors, injected randomness."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cms.draws import LabelledDraws, counting_draw, scalar_draw
from tests.cms.parties import Party
from tests.cms.peers import body_to_der, encrypt, openssl_decrypt
from transcoder.cms import (
    CmsError,
    CmsSettings,
    InputTooShort,
    encrypt_to_smime_body,
    smime_body_size,
)
from transcoder.errors import ServerError


class HashingSink(io.RawIOBase):
    """A write-only stream that keeps a digest and a count, never the data."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        """This stream accepts writes."""
        return True

    def write(self, data: Any) -> int:
        """Hash and count ``data``."""
        self.digest.update(data)
        self.count += len(data)
        return len(data)


class TrickleReader(io.RawIOBase):
    """A readable stream that hands out at most ``step`` octets per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        """This stream can be read."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Copy the next few octets into ``buffer``."""
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


class ReadOnlySource:
    """A source with ``read`` but no ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` octets."""
        return self._stream.read(size)


def test_memory_stays_flat_for_a_20_mb_message(parties: dict[str, Party], tmp_path: Path) -> None:
    """tracemalloc peak while encrypting 20 MB from a file stays under 4 MB."""
    size = 20 * 1000 * 1000
    path = tmp_path / "big.eml"
    with path.open("wb") as handle:
        block = os.urandom(1 << 20)
        for _ in range(size // len(block)):
            handle.write(block)
        handle.write(block[: size % len(block)])
    recipients = [parties["rsa3072"].recipient(), parties["p256"].recipient()]
    for cipher in ("aes256-cbc", "aes256-gcm"):
        config = CmsSettings(cipher)
        sink = HashingSink()
        with path.open("rb") as src:
            tracemalloc.start()
            try:
                written = encrypt_to_smime_body(src, size, cast(BinaryIO, sink), recipients, config)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert written == sink.count == smime_body_size(size, recipients, config)
        assert peak < 4 * 1024 * 1024, f"{cipher}: peak {peak} octets"


@pytest.mark.parametrize("length", [1000, 3 * 1024 * 1024 + 3])
def test_short_reads_and_read_only_sources(
    parties: dict[str, Party], tmp_path: Path, length: int
) -> None:
    """A source that returns a few octets per read, or lacks readinto, still gives the message."""
    plaintext = os.urandom(length)
    recipients = [parties["p384"].recipient()]
    config = CmsSettings("aes128-cbc")
    for source in (TrickleReader(plaintext, 4099), ReadOnlySource(plaintext)):
        out = io.BytesIO()
        encrypt_to_smime_body(source, length, out, recipients, config)  # type: ignore[arg-type]
        assert openssl_decrypt(tmp_path, body_to_der(out.getvalue()), parties["p384"]) == plaintext


@pytest.mark.parametrize("length", [100, 5 * 1024 * 1024])
def test_truncated_input_is_a_server_error(parties: dict[str, Party], length: int) -> None:
    """A source shorter than plain_len raises InputTooShort (a ServerError)."""
    src = io.BytesIO(b"x" * (length - 1))
    with pytest.raises(InputTooShort) as caught:
        encrypt_to_smime_body(
            src, length, io.BytesIO(), [parties["p256"].recipient()], CmsSettings()
        )
    assert isinstance(caught.value, ServerError)


def test_only_plain_len_octets_are_read(parties: dict[str, Party], tmp_path: Path) -> None:
    """Octets after plain_len stay unread and unencrypted."""
    src = io.BytesIO(b"inner entity" + b"TRAILER")
    out = io.BytesIO()
    encrypt_to_smime_body(src, 12, out, [parties["p256"].recipient()], CmsSettings())
    assert src.read() == b"TRAILER"
    assert openssl_decrypt(tmp_path, body_to_der(out.getvalue()), parties["p256"]) == (
        b"inner entity"
    )


def test_no_recipient_is_refused() -> None:
    """An empty recipient list raises CmsError (RecipientInfos is SET SIZE (1..MAX))."""
    with pytest.raises(CmsError):
        encrypt_to_smime_body(io.BytesIO(b""), 0, io.BytesIO(), [], CmsSettings())


def test_a_random_source_of_the_wrong_length_is_refused(parties: dict[str, Party]) -> None:
    """A draw must return exactly the octets asked for."""
    with pytest.raises(CmsError):
        encrypt(b"x", [parties["p256"].recipient()], CmsSettings(), draw=lambda label, n: b"\x00")


def test_a_source_of_only_zero_octets_cannot_pad_for_rsa(parties: dict[str, Party]) -> None:
    """PKCS#1 v1.5 needs nonzero padding octets: a source giving only zeros is refused."""
    with pytest.raises(CmsError):
        encrypt(b"x", [parties["rsa2048"].recipient()], CmsSettings(), draw=lambda _, n: bytes(n))


@pytest.mark.parametrize("name", ["p256", "p384", "p521", "rsa2048"])
def test_injected_randomness_makes_the_output_reproducible(
    parties: dict[str, Party], name: str
) -> None:
    """With every draw injected, messages are identical octet for octet (EC and RSA alike)."""
    plaintext = os.urandom(5000)
    recipients = [parties[name].recipient()]
    settings = CmsSettings("aes256-gcm")
    bodies = {encrypt(plaintext, recipients, settings, draw=counting_draw) for _ in range(2)}
    assert len(bodies) == 1
    assert encrypt(plaintext, recipients, settings) not in bodies


def test_the_ephemeral_key_is_the_drawn_scalar(parties: dict[str, Party], tmp_path: Path) -> None:
    """The ecdh-scalar draw c becomes the ephemeral key (c mod (n-1)) + 1; openssl opens it."""
    ephemeral = ec.derive_private_key(0x1234567, ec.SECP256R1())
    draws = LabelledDraws({"cms/recipient/0/ecdh-scalar": scalar_draw(ephemeral)}, os.urandom)
    body = encrypt(b"inner", [parties["p256"].recipient()], CmsSettings(), draw=draws)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert point in body_to_der(body)
    assert openssl_decrypt(tmp_path, body_to_der(body), parties["p256"]) == b"inner"


class FailingSink(io.RawIOBase):
    """A write-only stream that fails once ``limit`` octets have been written."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def writable(self) -> bool:
        """This stream accepts writes."""
        return True

    def write(self, data: Any) -> int:
        """Count ``data``; raise OSError past the limit."""
        self.count += len(data)
        if self.count > self.limit:
            raise OSError(28, "No space left on device")
        return len(data)


@pytest.mark.parametrize("length", [200_000, 6 * 1024 * 1024])
def test_write_errors_propagate_and_leave_no_thread(parties: dict[str, Party], length: int) -> None:
    """A failing destination raises its OSError to the caller; no helper thread survives."""
    before = threading.active_count()
    with pytest.raises(OSError, match="No space"):
        encrypt_to_smime_body(
            io.BytesIO(bytes(length)),
            length,
            cast(BinaryIO, FailingSink(length // 2)),
            [parties["p256"].recipient()],
            CmsSettings(),
        )
    assert threading.active_count() == before
