"""Crash-safe file replacement and file windows, shared by every layer that uses files.

No twisted import: the sans-IO layers may use it too.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600): a reader sees the old file or the new.

    Temporary file in the same directory, fsync, rename, fsync of the
    directory: after a crash the file is either wholly old or wholly new.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class _Window(io.RawIOBase):
    """``size`` octets as a seekable read-only file; subclasses say how to read at a position."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = max(size, 0)
        self._pos = 0

    def _read_at(self, position: int, count: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer`` without passing the window's end."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._read_at(self._pos, want)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the window (positions are relative to its start)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        """The position relative to the window's start."""
        return self._pos


class FileSlice(_Window):
    """The octets ``start``..``end`` of an open file, as a seekable read-only file.

    Closing the slice closes ``fp`` unless ``close_file`` is false (a slice
    lent out of a file its owner goes on reading).
    """

    def __init__(self, fp: IO[bytes], start: int, end: int, close_file: bool = True) -> None:
        super().__init__(end - start)
        self._fp = fp
        self._close_file = close_file
        self._start = start

    def _read_at(self, position: int, count: int) -> bytes:
        self._fp.seek(self._start + position)
        return self._fp.read(count)

    def close(self) -> None:
        """Close the slice and, unless told otherwise, the file under it."""
        if not self.closed and self._close_file:
            self._fp.close()
        super().close()


class PositionalReader(_Window):
    """The first ``size`` octets of a file descriptor, read with ``pread``: each reader has
    its own position, so several may read the same file at once (from any thread).
    ``owner`` is kept referenced while the reader lives (it keeps the descriptor open)."""

    def __init__(self, fd: int, size: int, owner: object = None) -> None:
        super().__init__(size)
        self._fd = fd
        self._owner = owner

    def _read_at(self, position: int, count: int) -> bytes:
        return os.pread(self._fd, count, position)
