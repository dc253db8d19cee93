"""The XKEY client: a library for MUA and script authors, and the ``transcoder-client`` CLI.

It speaks plain IMAP (stdlib :mod:`imaplib`) and works against any server
that advertises the ``XKEY`` capability (docs/design.md, "Protocol: XKEY")::

    from transcoder.client import XKeyClient, XKeyError

    with XKeyClient.connect("imap.example.org", 993, "me@example.org", password,
                            security="tls") as xkey:
        xkey.provision(open("me.crt", "rb").read())
        for key in xkey.keys():
            print(key.fingerprint, key.format, key.status, key.not_after)
        xkey.set_policy(mode="ALWAYS", format="SMIME")
        for server_key in xkey.server_keys():  # the server's own keys (issue 16)
            print(server_key.format, server_key.usage, server_key.fingerprint)

Modules: :mod:`.model` (the frozen values and the errors), :mod:`.syntax`
(pure response parsing), :mod:`.session` (:class:`XKeyClient` over imaplib),
:mod:`.settings` (where to connect: command line, environment, config file),
:mod:`.keyfile` (what a key file is, before it is sent), :mod:`.identity`
(test identities), :mod:`.cli` (the command line; exit status 0 / 1 refused /
2 failed).
"""

from __future__ import annotations

from transcoder.client.cli import main
from transcoder.client.model import (
    KeyInfo,
    PolicyInfo,
    PutResult,
    ServerKeyInfo,
    XKeyConnectionError,
    XKeyError,
)
from transcoder.client.session import XKeyClient

__all__ = [
    "KeyInfo",
    "PolicyInfo",
    "PutResult",
    "ServerKeyInfo",
    "XKeyClient",
    "XKeyConnectionError",
    "XKeyError",
    "main",
]
