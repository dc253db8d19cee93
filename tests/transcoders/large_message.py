"""A large plain-text message on disk, for the streaming tests of every transcoder."""

from __future__ import annotations

from pathlib import Path

#: 74 octets with CRLF: a typical line length, so the message has many lines.
LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"


def write_large_message(path: Path, megabytes: int = 24) -> int:
    """Write a ``Subject: big`` text/plain message of about ``megabytes`` MiB to ``path``.

    Written a MiB at a time, so the test process never holds it whole; returns its size.
    """
    with path.open("wb") as f:
        f.write(b"Subject: big\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(megabytes):
            f.write(LINE * (2**20 // len(LINE)))
    return path.stat().st_size
