"""The one error a transcoder raises when it cannot produce a view.

The client only ever sees an opaque ``NO [TRANSCODE-FAILED]`` (docs/design.md
invariant 3: fail closed, never plaintext); what went wrong is kept in
:attr:`TranscodeFailed.detail` for the server log.
"""

from __future__ import annotations

from transcoder.errors import ClientError

#: The text every client sees, whatever the cause.
OPAQUE_TEXT = "message could not be transcoded"


class TranscodeFailed(ClientError):
    """The message could not be transcoded for this user; nothing of it is served."""

    code = "TRANSCODE-FAILED"

    def __init__(self, detail: str = "") -> None:
        super().__init__(OPAQUE_TEXT)
        #: What went wrong, for the log only (may name keys, algorithms, offsets).
        self.detail = detail


__all__ = ["OPAQUE_TEXT", "TranscodeFailed"]
