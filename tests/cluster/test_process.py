"""stop_process: the signal asked for ends a child; one ignoring it is killed after the grace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from transcoder.cluster.process import stop_process


def _child(code: str) -> subprocess.Popen[bytes]:
    """A Python child that prints ``ready`` once its signal handlers are set."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    return process


def test_the_signal_asked_for_ends_the_child() -> None:
    process = _child("import time; print('ready', flush=True); time.sleep(60)")
    stop_process(process, signal.SIGINT, grace=10)
    # Ended by SIGINT itself (Python re-raises it on exit), not by the SIGKILL fallback.
    assert process.returncode == -signal.SIGINT


def test_a_child_ignoring_the_signal_is_killed_after_the_grace() -> None:
    process = _child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    started = time.monotonic()
    stop_process(process, signal.SIGTERM, grace=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5


def test_an_exited_child_is_left_alone() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    stop_process(process, signal.SIGTERM, grace=0)
    assert process.returncode == 0
