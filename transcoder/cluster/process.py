"""Stopping a child process by its PID: one signal, a grace period, then SIGKILL.

Shared by the cluster's parts (:mod:`.fronts`, :mod:`.postgres`) and the
benchmarks' servers, which differ only in the signal (SIGTERM as systemd
sends it; SIGINT for PostgreSQL's fast shutdown) and the grace period.
"""

from __future__ import annotations

import signal
import subprocess


def stop_process(
    process: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    grace: float = 30.0,
) -> None:
    """Send ``sig`` to a running ``process``, wait ``grace`` seconds, SIGKILL if it lingers.

    Does nothing when the process has already exited; returns once it is reaped.
    """
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
