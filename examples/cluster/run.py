"""The scale-out stack on one machine (issue 14): Dovecot, PostgreSQL, two fronts, HAProxy.

Run:  python examples/cluster/run.py [--clients N] [--seconds S]

Everything on loopback, unprivileged, in a temporary directory, from Debian
packages (dovecot-imapd, postgresql, haproxy) and this project:

1. a Dovecot holding the mail of demo@example.org (a few messages delivered
   into its Maildir, as an MDA would);
2. a PostgreSQL cluster made with initdb (as ``nobody`` when run as root):
   the keystore every front shares (``--keystore postgresql://...``);
3. two fronts (``twistd -n transcoder --backend imap://... --keystore ...
   --view-secret FILE --imap haproxy:tcp:PORT``), one view secret file;
4. HAProxy before them (``mode tcp``, ``send-proxy-v2``, health checks).

Then, through the balancer only: the user provisions a new S/MIME
certificate and sets ``MODE ALWAYS``; the first message is fetched and
opened with ``openssl cms -decrypt``; ``--clients`` sessions loop LOGIN,
SELECT, FETCH, STORE, APPEND, LOGOUT for ``--seconds``.  A summary is
printed (commands per second, protocol errors, logins per front) and every
process is stopped by its PID -- also on Ctrl-C.  Exit status 0 when the
decrypted message matched and no command failed.

The configuration files beside this script (haproxy.cfg, dovecot-front.conf,
transcoder-front@.service, haproxy.service.d/) are what a hoster adapts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from types import FrameType

from transcoder.client import XKeyClient
from transcoder.client.identity import new_smime_identity
from transcoder.cluster.load import run_load
from transcoder.cluster.stack import Stack

USER = "demo@example.org"
MARKER = "delivered to Dovecot, read through any front"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds into Stack.stop(): every process stopped by PID


def provision(stack: Stack, password: str) -> tuple[str, str]:
    """A new S/MIME identity stored through the balancer, MODE ALWAYS; (cert, key) paths."""
    folder = stack.root / "identity"
    folder.mkdir()
    new_smime_identity(USER, folder, datetime.now(UTC), secrets.token_urlsafe(12))
    cert, key = folder / f"{USER}.crt", folder / f"{USER}.key"
    with XKeyClient.connect("127.0.0.1", stack.port, USER, password, "plain") as client:
        client.provision(cert.read_bytes())
        policy = client.set_policy(mode="always")
    print(f"provisioned {cert.name} through the balancer; policy {policy.mode}")
    return str(cert), str(key)


def fetch_and_decrypt(stack: Stack, password: str, cert: str, key: str) -> bool:
    """The first message through the balancer, opened with openssl cms -decrypt."""
    import imaplib

    imap = imaplib.IMAP4("127.0.0.1", stack.port, timeout=60)
    try:
        imap.login(USER, password)
        imap.select("INBOX")
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        literals = [part[1] for part in data if isinstance(part, tuple)] if typ == "OK" else []
        view = literals[0] if literals else b""
    finally:
        imap.logout()
    print(f"fetched message 1: {len(view)} octets, {view.count(b'pkcs7-mime') and 'S/MIME'}")
    if shutil.which("openssl") is None:
        print("openssl not installed: not decrypted")
        return MARKER.encode() not in view
    opened = subprocess.run(
        ["openssl", "cms", "-decrypt", "-recip", cert, "-inkey", key],
        input=view,
        capture_output=True,
        check=False,
    )
    ok = opened.returncode == 0 and MARKER.encode() in opened.stdout
    print(f"decrypted (openssl cms): {'opened, the message is there' if ok else 'FAILED'}")
    return ok and MARKER.encode() not in view


def main(argv: list[str] | None = None) -> int:
    """Start the stack, provision, drive the load, print the summary, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent sessions (8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration (5)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    password = secrets.token_urlsafe(12)
    stack = Stack({USER: password}, fronts=2)
    try:
        stack.start()
        assert stack.dovecot is not None
        for n in range(3):
            stack.dovecot.drop(
                USER, f"From: a@example.org\r\nSubject: mail {n}\r\n\r\n{MARKER}\r\n".encode()
            )
        print("running (pid):", ", ".join(f"{k} {v}" for k, v in stack.pids().items()))
        fronts = ", ".join(f"{n} {f.port}" for n, f in stack.front_processes.items())
        print(f"balancer: 127.0.0.1:{stack.port}; fronts: {fronts}")
        cert, key = provision(stack, password)
        decrypted = fetch_and_decrypt(stack, password, cert, key)
        result = run_load(stack.port, USER, password, args.clients, args.seconds)
        logins = {
            name: front.logs().count(f"Login of {USER}")
            for name, front in stack.front_processes.items()
        }
        print(
            f"load: {args.clients} clients, {result.seconds:.1f} s: {result.commands} commands"
            f" ({result.rate:.0f}/s), {result.sessions} sessions, {result.errors} errors"
        )
        for failure in result.failures:
            print(f"  error: {failure}")
        print("logins per front:", ", ".join(f"{k} {v}" for k, v in logins.items()))
        print(f"load average: {os.getloadavg()}")
        healthy = decrypted and result.errors == 0 and all(logins.values())
        print("summary:", "OK" if healthy else "FAILED")
        return 0 if healthy else 1
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        stack.stop()
        print("stopped: every process by its PID")


if __name__ == "__main__":
    sys.exit(main())
