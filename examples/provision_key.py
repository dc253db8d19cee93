"""Provision your key with the transcoder.client library and turn transcoding on.

Run:  TRANSCODER_PASSWORD=... python examples/provision_key.py HOST PORT USER KEYFILE [CAFILE]

Connects with implicit TLS (verifying the server against CAFILE, or the system
CAs), stores KEYFILE -- an S/MIME certificate (PEM or DER) or an OpenPGP
public key (armored or binary) -- lists the account's keys, and sets the
policy so that every message is served encrypted in the new key's format.

What a mail client or provisioning script needs is the few lines in
``provision``; the rest is argument handling.  Each refusal carries the
server's response code: XKEY-INVALID (unusable key), XKEY-ADDRESS (the key is
for another address), XKEY-TOOBIG, XKEY-NOKEY.
"""

from __future__ import annotations

import getpass
import os
import ssl
import sys
from pathlib import Path

from transcoder.client import XKeyClient, XKeyConnectionError, XKeyError


def provision(client: XKeyClient, key: bytes) -> None:
    """Store ``key``, show the account's keys, and transcode every FETCH with it."""
    client.provision(key)
    stored = client.keys()
    active = [k for k in stored if k.status == "ACTIVE" and "ENCRYPT" in k.usage]
    for k in active:
        expires = k.not_after.date().isoformat() if k.not_after else "never"
        print(f"{k.format:8} {k.fingerprint}  {', '.join(k.addresses)}  expires {expires}")
    if not active:
        print("no active key can encrypt (signing-only certificate?); policy left alone")
        return
    policy = client.set_policy(mode="ALWAYS", format=active[-1].format)
    print(f"policy: mode {policy.mode}, format {policy.format}")


def main(argv: list[str]) -> int:
    """Parse ``HOST PORT USER KEYFILE [CAFILE]`` and run :func:`provision`."""
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, user, keyfile = argv[:4]
    context = ssl.create_default_context(cafile=argv[4] if len(argv) == 5 else None)
    password = os.environ.get("TRANSCODER_PASSWORD") or getpass.getpass(f"Password for {user}: ")
    key = Path(keyfile).read_bytes()
    try:
        with XKeyClient.connect(host, int(port), user, password, "tls", context) as client:
            provision(client, key)
    except XKeyConnectionError as exc:
        print(f"cannot reach the server: {exc}", file=sys.stderr)
        return 2
    except XKeyError as exc:
        # exc.code is the server's response code, exc.text its explanation.
        print(f"refused ({exc.code}): {exc.text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
