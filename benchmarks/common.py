"""The server side of the FETCH benchmarks: a real server, accounts, keys and mail.

The FETCH benchmarks (``fetch_smime.py``, ``fetch_openpgp.py``) measure the
server as a user meets it: a ``twistd -n transcoder`` process on a free
loopback port with a fresh data directory, driven by the standard library's
:mod:`imaplib`.  This module gives them

* :class:`Server`: start / stop that process, wait for the view cache to
  settle after an invalidation;
* :func:`prepare_accounts`, :func:`login`, :func:`provision`,
  :func:`make_views_cold`: accounts through ``transcoder-admin``, keys and
  policy through :class:`transcoder.client.XKeyClient`;
* :func:`drop_messages`: many messages into a mailbox at once, the way an
  MDA delivers (files into ``new/``; the server assigns UIDs at SELECT);
* :func:`make_smime_certificate`, :func:`small_message`: test material;
* :func:`fetch_to_file`, :func:`body_of`, :func:`same_tail`: checking that
  what was fetched decrypts to the stored message.

Measuring is :mod:`measure`.  Run the benchmarks as scripts (``python
benchmarks/fetch_smime.py``); these files are not tests and never run under
pytest.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transcoder.client import XKeyClient  # noqa: E402
from transcoder.cluster.process import stop_process  # noqa: E402
from transcoder.store.intake import UniqueNames  # noqa: E402
from transcoder.store.maildir import MaildirStore  # noqa: E402

PASSWORD = "benchmark password"
#: The account served transcoded views (MODE ALWAYS) and the one served as stored (OFF).
ENCRYPTED = "reader@example.org"
OFF = "plain@example.org"
MB = 1_000_000
MiB = 2**20
#: How long a server may take to greet after start.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_note() -> str:
    """The load average, with a warning when other processes compete for the CPUs."""
    load = os.getloadavg()[0]
    busy = load > 0.5
    warning = " -- other processes are busy: figures will be noisy" if busy else ""
    return f"load average {load:.2f} on {os.cpu_count()} CPUs{warning}"


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()},"
        f" Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def admin(data: Path, *args: str, stdin: str = "") -> None:
    """Run ``transcoder-admin --data DATA ARGS``; raise with its stderr on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "transcoder.admin", "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"transcoder-admin {' '.join(args)}: {done.stderr}")


def add_account(data: Path, address: str) -> None:
    """Create the account ``address`` with :data:`PASSWORD`."""
    admin(data, "user", "add", address, stdin=PASSWORD + "\n")


def prepare_accounts(data: Path) -> None:
    """A fresh data directory with the accounts :data:`ENCRYPTED` and :data:`OFF`."""
    for address in (ENCRYPTED, OFF):
        add_account(data, address)


def wait_for_greeting(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Whether 127.0.0.1:``port`` greets ``* OK`` in ``timeout`` s; False if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as s,
        ):
            if s.recv(100).startswith(b"* OK"):
                return True
        time.sleep(0.1)
    return False


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it lingers after 30 s."""
    stop_process(process, signal.SIGTERM, grace=30)


@dataclass
class Server:
    """A ``twistd -n transcoder`` process on a free loopback port (no implicit TLS)."""

    data: Path
    extra_args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """twistd's log file (next to the data directory)."""
        return self.data.with_name(self.data.name + "-twistd.log")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None, "server not started"
        return self.process.pid

    def start(self) -> None:
        """Start the server and wait until it greets."""
        command = [
            *(sys.executable, "-c", "from twisted.scripts.twistd import run; run()"),
            *("-n", "--pidfile=", f"--logfile={self.log}", "transcoder"),
            *("--data", str(self.data), "--imaps", "none", "--log-level", "warn"),
            *("--imap", f"tcp:{self.port}:interface=127.0.0.1", *self.extra_args),
        ]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
        if wait_for_greeting(self.process, self.port, START_TIMEOUT):
            return
        if self.process.poll() is not None:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{log}")
        raise RuntimeError(f"server did not greet within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """SIGTERM, as a service manager would; SIGKILL if it lingers."""
        if self.process is not None:
            terminate(self.process)
        self.process = None

    def wait_views_settled(self, timeout: float = 60.0) -> None:
        """Wait until invalidated views have been removed from ``DATA/views``.

        An invalidation renames the account's view directory aside and
        removes it in a worker thread; a cold run should not share the disk
        and CPUs with that removal.
        """
        deadline = time.monotonic() + timeout
        while any((self.data / "views").glob("*/*.trash*")):
            if time.monotonic() > deadline:
                raise RuntimeError("view cache invalidation did not finish")
            time.sleep(0.02)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def login(server: Server, address: str) -> imaplib.IMAP4:
    """An imaplib connection to ``server``, logged in as ``address`` (plaintext loopback)."""
    imap = imaplib.IMAP4("127.0.0.1", server.port, timeout=600)
    imap.login(address, PASSWORD)
    return imap


def provision(imap: imaplib.IMAP4, key: bytes, fmt: str) -> None:
    """Store ``key`` over XKEY and set the policy to ``MODE ALWAYS, FORMAT fmt``."""
    xkey = XKeyClient(imap)
    xkey.provision(key)
    xkey.set_policy(mode="always", format=fmt)


def make_views_cold(imap: imaplib.IMAP4, server: Server) -> None:
    """Drop the account's cached views: any XKEY POLICY change invalidates them."""
    XKeyClient(imap).set_policy(mode="always")
    server.wait_views_settled()


def check_ok(answer: tuple[str, Any], what: str) -> Any:
    """The data of an imaplib answer; raise unless it is OK."""
    typ, data = answer
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data!r}")
    return data


def drop_messages(data: Path, address: str, mailbox: str, messages: Iterable[bytes | Path]) -> int:
    """Put ``messages`` into ``mailbox`` as an MDA does (``tmp/``, rename into ``new/``).

    No fsync (benchmark data); names sort in arrival order, so the server
    numbers them in the order given at the next SELECT.  The mailbox must
    exist.  Returns how many were dropped.
    """
    from twisted.internet import reactor  # only its clock: UniqueNames reads seconds()

    store = MaildirStore(data / "mail", reactor)
    path = store.account(address).mailbox_path(mailbox)
    names = UniqueNames(reactor)
    count = 0
    for message in messages:
        name = names.next()
        tmp = path / "tmp" / name
        if isinstance(message, Path):
            shutil.copyfile(message, tmp)
        else:
            tmp.write_bytes(message)
        os.rename(tmp, path / "new" / name)
        count += 1
    return count


def make_smime_certificate(directory: Path, address: str, bits: int) -> tuple[Path, Path]:
    """An RSA key and a self-signed S/MIME certificate naming ``address``; (cert, key) PEM."""
    key = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def small_message(index: int, size: int = 4096) -> bytes:
    """A ``size``-octet plain-text message, distinct per ``index``."""
    header = (
        f"From: sender{index}@example.org\r\nTo: reader@example.org\r\n"
        f"Subject: benchmark message {index}\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <bench-{index}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode("ascii")
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * ((size - len(header)) // len(line) + 1)
    return header + body[: size - len(header)]


@contextlib.contextmanager
def work_directory(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A scratch directory, removed at the end unless ``keep``."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def fetch_to_file(imap: imaplib.IMAP4, path: Path) -> int:
    """Write the literal of ``FETCH 1 BODY.PEEK[]`` (selected mailbox) to ``path``; its size."""
    data = check_ok(imap.fetch("1", "BODY.PEEK[]"), "FETCH 1 BODY.PEEK[]")
    literal = next(item[1] for item in data if isinstance(item, tuple))
    path.write_bytes(literal)
    return len(literal)


def body_of(path: Path) -> tuple[int, int]:
    """(offset, length) of the body of the message in ``path`` (after the blank line)."""
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    offset = head.index(b"\r\n\r\n") + 4
    return offset, path.stat().st_size - offset


def same_tail(whole: Path, part: Path, offset: int) -> bool:
    """Whether ``whole`` ends with the octets of ``part`` from ``offset`` on."""
    length = part.stat().st_size - offset
    if whole.stat().st_size < length:
        return False
    with whole.open("rb") as a, part.open("rb") as b:
        a.seek(whole.stat().st_size - length)
        b.seek(offset)
        while True:
            x, y = a.read(MiB), b.read(MiB)
            if x != y:
                return False
            if not x:
                return True
