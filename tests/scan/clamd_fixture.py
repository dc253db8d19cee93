"""A real clamd for tests: Debian's clamav-daemon, started unprivileged-style by the test
itself with its own config and a signature database the test writes (nothing downloaded)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The EICAR anti-virus test file (eicar.org), the string every scanner is meant to detect.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIGNATURE = "Transcoder.Test.EICAR"
#: What clamd reports for it (signatures outside its official databases get the suffix).
EICAR_FOUND = EICAR_SIGNATURE + ".UNOFFICIAL"
CLAMD = "/usr/sbin/clamd"


@dataclass
class Clamd:
    """A running clamd: its socket, process, folder and config (so it can be started again)."""

    socket: Path
    process: subprocess.Popen[bytes]
    folder: Path
    config: Path | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start(self) -> None:
        """Start clamd again after :meth:`stop` (same config and socket); returns once
        it answers PING."""
        assert self.config is not None
        if self.process.poll() is not None:
            self.socket.unlink(missing_ok=True)
            self.process = _launch(self.config)
        deadline = time.monotonic() + 60
        while not _answers(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"clamd did not start: {err}")
            time.sleep(0.1)


def _launch(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLAMD, f"--config-file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _answers(sock: Path) -> bool:
    """clamd on ``sock`` answers PING."""
    import socket as sockets

    if not sock.exists():
        return False
    try:
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(b"zPING\0")
            return s.recv(16).startswith(b"PONG")
    except OSError:
        return False


@contextmanager
def running_clamd() -> Iterator[Clamd]:
    """clamd on a Unix socket in a short temporary folder, with one body signature: EICAR's
    (ClamAV .ndb format: name, target type 0 = any file, offset *, hex)."""
    if not Path(CLAMD).exists():
        pytest.skip("clamd is not installed (Debian clamav-daemon)")
    folder = Path(tempfile.mkdtemp(prefix="tc-clamd-", dir="/tmp"))
    db = folder / "db"
    db.mkdir()
    (db / "test.ndb").write_text(f"{EICAR_SIGNATURE}:0:*:{EICAR.hex()}\n")
    sock = folder / "clamd.ctl"
    config = folder / "clamd.conf"
    config.write_text(
        f"Foreground yes\nLocalSocket {sock}\nDatabaseDirectory {db}\n"
        f"LogFile {folder / 'clamd.log'}\nPidFile {folder / 'clamd.pid'}\n"
        f"TemporaryDirectory {folder}\nStreamMaxLength 100M\nMaxThreads 2\n"
    )
    clamd = Clamd(sock, _launch(config), folder, config)
    try:
        clamd.start()
        yield clamd
    finally:
        clamd.stop()
        shutil.rmtree(folder, ignore_errors=True)
