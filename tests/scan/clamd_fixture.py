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
    """A running clamd: its socket and process."""

    socket: Path
    process: subprocess.Popen[bytes]
    folder: Path

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
    process = subprocess.Popen(
        [CLAMD, f"--config-file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    clamd = Clamd(sock, process, folder)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"clamd did not start: {err}")
            time.sleep(0.1)
        yield clamd
    finally:
        clamd.stop()
        shutil.rmtree(folder, ignore_errors=True)
