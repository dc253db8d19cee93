"""The server's view secret: ``DIR/view-secret``, or the file ``--view-secret`` names.

32 random octets from which every view's randomness is derived
(:mod:`transcoder.transcoders.derivation`).  Servers that read the same
secret (and the same store and keys) serve the same octets for every
message; a new secret changes every view.

* ``DIR/view-secret`` is made on first start: 32 octets from ``os.urandom``
  written to a temporary file (mode 0600) in the same directory, synced,
  then hard-linked to the final name, which fails if the name exists.  So
  the file is never seen partly written, survives a crash whole or not at
  all, and two servers starting at once on one directory agree on one
  secret (the loser of the race reads the winner's).
* A file named by ``--view-secret`` must exist already: creating a fresh
  secret because of a typo would silently split a group of servers.
* Either way the file must hold exactly 32 octets and must not be readable
  or writable by others (``chmod 600``, or 640 for a group of services).

No twisted import here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from transcoder.errors import ConfigurationError
from transcoder.files import fsync_dir
from transcoder.transcoders.derivation import SECRET_SIZE, ViewSecret

#: The secret's name in the data directory.
FILENAME = "view-secret"


def read_view_secret(path: Path) -> ViewSecret:
    """The secret in ``path``; ConfigurationError if missing, open to others or not 32 octets."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ConfigurationError(f"cannot read the view secret {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigurationError(
                f"the view secret {path} is open to other users: chmod 600 (or 640) it"
            )
        value = f.read(SECRET_SIZE + 1)
    if len(value) != SECRET_SIZE:
        raise ConfigurationError(
            f"the view secret {path} holds {len(value)} octets, not {SECRET_SIZE}"
        )
    return ViewSecret(value)


def create_view_secret(path: Path) -> bool:
    """Make ``path`` hold 32 fresh random octets unless it exists; whether this call made it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp: mode 0600
            f.write(os.urandom(SECRET_SIZE))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing secret
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def load_view_secret(data: Path, explicit: str | None) -> tuple[ViewSecret, Path, bool]:
    """The server's secret: from ``explicit`` (``--view-secret``) or ``data/view-secret``.

    Returns the secret, its path, and whether it was created by this call
    (only ever ``data/view-secret``, on first start).
    """
    if explicit:
        path = Path(explicit).absolute()
        return read_view_secret(path), path, False
    path = data / FILENAME
    created = False if path.exists() else create_view_secret(path)
    return read_view_secret(path), path, created


__all__ = ["FILENAME", "create_view_secret", "load_view_secret", "read_view_secret"]
