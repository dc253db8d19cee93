"""Listening services that answer a port in use with one line, not a traceback.

``twistd -n transcoder`` started while another server holds its port used
to end in a 37-line traceback (issue 13).  :class:`OptionListener` knows
which command-line option its endpoint came from and, when the port cannot
be bound, stops the start with one line naming the port and that option::

    transcoder: cannot listen on port 1143 (--imap tcp:1143:interface=127.0.0.1):
    address already in use; choose another with --imap

(one line on the terminal).  ``SystemExit`` carries the line: twistd lets it
through, Python prints it on stderr and exits with status 1.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError


def cannot_listen_message(error: CannotListenError, option: str, description: str) -> str:
    """The one line for ``error`` on the endpoint ``description`` given with ``--option``."""
    socket_error = error.socketError
    code = getattr(socket_error, "errno", None)
    if code == errno.EADDRINUSE:
        reason = "address already in use"
    elif code == errno.EACCES:
        reason = "permission denied (ports below 1024 need privileges)"
    else:
        reason = getattr(socket_error, "strerror", None) or str(socket_error)
    return (
        f"transcoder: cannot listen on port {error.port} (--{option} {description}): "
        f"{reason}; choose another with --{option}"
    )


class OptionListener(StreamServerEndpointService):
    """A stream endpoint service that fails to start with one line naming its option."""

    def __init__(self, endpoint: Any, factory: Any, option: str, description: str) -> None:
        super().__init__(endpoint, factory)
        self.option = option
        self.description = description
        # As strports.service does: a port that cannot be bound stops the start.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        """Listen; a port that cannot be bound ends the process with one line."""
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            raise SystemExit(cannot_listen_message(error, self.option, self.description)) from None
