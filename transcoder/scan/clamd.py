"""The gateway virus scan (issue 16): messages streamed to clamd with INSTREAM.

draft-kadobayashi-smime-secureops section 2.2: a gateway that can decrypt
can scan.  Every APPENDed message -- after the server decrypted it, if it
was encrypted to the server -- is streamed to clamd before it is stored;
so is every delivered one (:mod:`transcoder.scan.delivery`).

The protocol (clamd(8), "INSTREAM") is small enough to speak directly:
``zINSTREAM\\0``, then chunks each prefixed by its length as a 4-octet
big-endian number, then a zero length; the answer is one NUL-terminated
line, ``stream: OK``, ``stream: <signature> FOUND`` or ``... ERROR``.  The
PyPI ``clamd`` package speaks the same but has had no release since 2016,
so it is not a dependency.  :func:`instream_frames` and :func:`parse_reply`
are the sans-IO part; :class:`ClamdScanner` the blocking client (call it from
a worker thread).  Fail closed: clamd unreachable, timing out or answering
anything but OK or FOUND is :class:`ScannerUnavailable` (``NO
[UNAVAILABLE]``), and the message is not stored.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from transcoder.errors import ClientError, ConfigurationError

#: Octets per INSTREAM chunk (clamd's StreamMaxLength caps the total, not chunks).
CHUNK = 64 * 1024
TIMEOUT = 60.0


class MessageInfected(ClientError):
    """clamd found a signature in the message: refused, nothing stored."""

    code = "CANNOT"


class ScannerUnavailable(ClientError):
    """clamd could not be asked or gave no verdict: refused (fail closed), nothing stored."""

    code = "UNAVAILABLE"


@dataclass(frozen=True)
class Verdict:
    """clamd's answer: ``signature`` is ``None`` for a clean message."""

    signature: str | None

    @property
    def clean(self) -> bool:
        """Whether clamd found nothing."""
        return self.signature is None


def instream_frames(source: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """The octets to send for INSTREAM of ``source`` (read from where it stands)."""
    yield b"zINSTREAM\0"
    while block := source.read(chunk):
        yield len(block).to_bytes(4, "big") + block
    yield b"\0\0\0\0"


def parse_reply(reply: bytes) -> Verdict:
    """clamd's answer to INSTREAM; ScannerUnavailable for anything but OK or FOUND."""
    text = reply.rstrip(b"\0\n").decode("utf-8", "replace")
    _, _, result = text.partition(": ")
    if result == "OK":
        return Verdict(None)
    if result.endswith(" FOUND") and len(result) > len(" FOUND"):
        return Verdict(result[: -len(" FOUND")])
    raise ScannerUnavailable("the virus scanner gave no verdict")


@dataclass(frozen=True)
class ClamdScanner:
    """A clamd at ``unix:/path/clamd.ctl`` or ``tcp:HOST:PORT``."""

    address: str
    timeout: float = TIMEOUT

    @classmethod
    def parse(cls, address: str) -> ClamdScanner:
        """Check ``--clamd``'s value."""
        kind, _, rest = address.partition(":")
        if kind == "unix" and rest:
            return cls(address)
        if kind == "tcp" and rest.rpartition(":")[2].isdigit() and rest.rpartition(":")[0]:
            return cls(address)
        raise ConfigurationError("--clamd takes unix:/path/to/clamd.ctl or tcp:HOST:PORT")

    def _connect(self) -> socket.socket:
        kind, _, rest = self.address.partition(":")
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(rest)
            return sock
        host, _, port = rest.rpartition(":")
        return socket.create_connection((host, int(port)), timeout=self.timeout)

    def scan(self, source: BinaryIO) -> Verdict:
        """Stream ``source`` from its start to clamd; its verdict (``source`` rewound)."""
        source.seek(0)
        try:
            with self._connect() as sock:
                for frame in instream_frames(source):
                    sock.sendall(frame)
                reply = b""
                while not reply.endswith(b"\0"):
                    data = sock.recv(4096)
                    if not data:
                        break
                    reply += data
        except OSError as e:
            raise ScannerUnavailable("the virus scanner is unavailable") from e
        finally:
            source.seek(0)
        return parse_reply(reply)

    def check(self, source: BinaryIO) -> None:
        """Raise MessageInfected when clamd finds a signature in ``source``."""
        verdict = self.scan(source)
        if verdict.signature is not None:
            raise MessageInfected(f"message refused: {verdict.signature}")
