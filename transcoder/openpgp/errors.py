"""Errors of the OpenPGP adapter (subclasses of the one hierarchy in :mod:`transcoder.errors`)."""

from __future__ import annotations

from collections.abc import Sequence

from transcoder.errors import ServerError

#: At most this many of gpg's stderr lines are kept for the log.
MAX_LOGGED_LINES = 40


class GpgFailed(ServerError):
    """gpg could not encrypt (missing binary, broken key, killed process, bad exit).

    Opaque to the client (the FETCH answers ``NO [TRANSCODE-FAILED]``); the
    log gets :meth:`log_detail`: the reason, gpg's exit status and its
    status-fd and diagnostic lines.  Whatever was written to the output
    before the failure is not a valid message and must be discarded.
    """

    def __init__(
        self, reason: str, *, status_lines: Sequence[str] = (), returncode: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_lines = tuple(status_lines)[-MAX_LOGGED_LINES:]
        self.returncode = returncode

    def log_detail(self) -> str:
        """One log entry: reason, exit status and gpg's lines (never shown to the client)."""
        head = f"gpg failed: {self.reason}"
        if self.returncode is not None:
            head += f" (exit status {self.returncode})"
        return "\n".join([head, *self.status_lines])


class OpenPgpError(ServerError):
    """The native OpenPGP encoder refused: a malformed key packet, a message too large to frame,
    a broken random source.  Opaque to the client, like :class:`GpgFailed`."""


class UnsupportedRecipient(OpenPgpError):
    """A key the native encoder does not implement (algorithm, curve, key version).

    Such keys are encrypted to by gpg instead (:mod:`transcoder.transcoders.pgpmime`).
    """
