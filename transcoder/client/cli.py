"""``transcoder-client``: provision and manage your keys on an XKEY server, from a shell.

Usage::

    transcoder-client --host H [--port P] [--starttls | --tls] [--insecure | --cafile FILE]
                      --user U COMMAND

    COMMAND:  provision FILE                 store a certificate or OpenPGP public key ("-": stdin)
              keys [--json]                  list your keys
              retire FINGERPRINT             retire a key
              policy [--mode always|off] [--format smime|openpgp] [--json]

The password comes from the environment variable ``TRANSCODER_PASSWORD`` or,
when that is unset, a prompt on the terminal -- never the command line, where
other local users could read it.  The server certificate is verified (system
CAs, or ``--cafile``); ``--insecure`` turns verification off, with a warning.
Without ``--starttls``/``--tls`` the password is only sent to a loopback peer.

A change that may alter how mail is served -- a key stored or retired
under ``MODE ALWAYS``, a new mode or format -- is followed by a note on
stderr (:data:`RESYNC_NOTE`): every mailbox then presents a new UIDVALIDITY,
so the user's mail clients download everything again.

Exit status (see :data:`EXIT_CODES`): 0 success; 1 the server refused (one
line on stderr: ``transcoder-client: XKEY-ADDRESS: <server text>``), does
not offer XKEY, or answered something malformed; 2 command-line error,
unreadable FILE, or connection/TLS/login failure.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from transcoder.client.model import (
    KeyInfo,
    PolicyInfo,
    XKeyConnectionError,
    XKeyError,
    format_timestamp,
)
from transcoder.client.session import DEFAULT_TIMEOUT, XKeyClient, normalize_fingerprint

PROG = "transcoder-client"
#: Printed (on stderr) after a change that may have changed how mail is served (issue 9).
RESYNC_NOTE = (
    f"{PROG}: note: how your mail is served changed, so every mailbox now shows a new "
    "UIDVALIDITY: your mail clients drop the copies they keep and download all messages "
    "again (a full resync), and open connections are ended (they reconnect)"
)
PASSWORD_VARIABLE = "TRANSCODER_PASSWORD"
#: Exit status of each outcome.
EXIT_CODES = {"ok": 0, "refused": 1, "failed": 2}
#: Default ports: IMAP (STARTTLS or plain) and IMAPS (RFC 8314).
DEFAULT_PORTS = {"starttls": 143, "plain": 143, "tls": 993}


class UsageError(Exception):
    """A problem on our side of the exchange (options, files): exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exit status 2 on a syntax error, as argparse does)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Provision and manage your S/MIME and OpenPGP keys on an IMAP server "
        "that offers XKEY.",
        epilog=f"The password is read from ${PASSWORD_VARIABLE} or prompted for. Exit status: "
        "0 success, 1 refused by the server (or no XKEY), 2 usage, connection, TLS or "
        "login failure.",
    )
    parser.add_argument("--host", required=True, help="server name or address")
    parser.add_argument("--port", type=int, help="default 143, or 993 with --tls")
    security = parser.add_mutually_exclusive_group()
    security.add_argument(
        "--starttls", dest="security", action="store_const", const="starttls", help="STARTTLS"
    )
    security.add_argument(
        "--tls", dest="security", action="store_const", const="tls", help="implicit TLS"
    )
    # Neither: plain IMAP, and the password only goes to a loopback peer.
    parser.set_defaults(security="plain")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="PEM file of CA certificates to verify the server with")
    trust.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    parser.add_argument("--user", required=True, help="login name (your address)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    provision = commands.add_parser("provision", help="store a certificate or OpenPGP key")
    provision.add_argument("file", metavar="FILE", help='key file (PEM, DER, PGP); "-" = stdin')
    keys = commands.add_parser("keys", help="list your keys")
    keys.add_argument("--json", action="store_true", help="print JSON")
    retire = commands.add_parser("retire", help="retire a key")
    retire.add_argument("fingerprint", metavar="FINGERPRINT")
    policy = commands.add_parser("policy", help="show or change your policy")
    policy.add_argument("--mode", type=str.upper, choices=("ALWAYS", "OFF"))
    policy.add_argument("--format", type=str.upper, choices=("SMIME", "OPENPGP"))
    policy.add_argument("--json", action="store_true", help="print JSON")
    return parser


def format_keys(keys: Sequence[KeyInfo]) -> list[str]:
    """One aligned line per key: fingerprint, format, status, not-after,
    addresses, usage (``never`` for no expiry, ``-`` for an empty list)."""
    width = max((len(key.fingerprint) for key in keys), default=0)
    return [
        f"{key.fingerprint:<{width}}  {key.format:<7}  {key.status:<7}  "
        f"{format_timestamp(key.not_after) or 'never':<20}  "
        f"{','.join(key.addresses) or '-'}  {','.join(key.usage) or '-'}"
        for key in keys
    ]


def format_policy(policy: PolicyInfo) -> list[str]:
    """The policy as ``mode: ...`` and ``format: ...`` lines."""
    return [f"mode: {policy.mode}", f"format: {policy.format or 'none'}"]


def ssl_context(args: argparse.Namespace, stderr: TextIO) -> ssl.SSLContext:
    """Verify against the system CAs, or ``--cafile``; ``--insecure`` verifies nothing."""
    if args.insecure:
        print(
            f"{PROG}: warning: --insecure: the server certificate is not verified; "
            "anyone on the path can read your password",
            file=stderr,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {args.cafile}: {exc}") from exc


def read_key_file(name: str, stdin: TextIO) -> bytes:
    """The octets of FILE (``-``: standard input), unchanged: DER and PGP are binary."""
    try:
        if name == "-":
            return stdin.buffer.read()
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc


def obtain_password(user: str, environ: Mapping[str, str], prompt: Callable[[str], str]) -> str:
    """``$TRANSCODER_PASSWORD``, or what the user types at the prompt."""
    if PASSWORD_VARIABLE in environ:
        return environ[PASSWORD_VARIABLE]
    try:
        return prompt(f"Password for {user}: ")
    except EOFError:
        raise UsageError(f"no password: set {PASSWORD_VARIABLE} or run on a terminal") from None


def run_command(
    client: XKeyClient,
    args: argparse.Namespace,
    key: bytes,
    out: TextIO,
    err: TextIO | None = None,
) -> None:
    """Carry out the subcommand and print its result; on ``err``, what a change costs.

    Whether a change may have changed how mail is served is judged from the
    policy: a new policy with ``MODE ALWAYS`` before or after (read before it
    is set); a key stored or retired while the mode is ``ALWAYS`` and the
    key's format is the policy's (not known for a retired key: assumed).
    """
    sets_policy = args.command == "policy" and bool(args.mode or args.format)
    changes = sets_policy or args.command in ("provision", "retire")
    before = client.policy() if err is not None and sets_policy else None
    key_format, set_to = carry_out(client, args, key, out)
    if err is None or not changes:
        return
    after = set_to or client.policy()
    if before is not None:
        changed = before != after and "ALWAYS" in (before.mode, after.mode)
    else:
        changed = after.mode == "ALWAYS" and key_format in (None, after.format)
    if changed:
        print(RESYNC_NOTE, file=err)


def carry_out(
    client: XKeyClient, args: argparse.Namespace, key: bytes, out: TextIO
) -> tuple[str | None, PolicyInfo | None]:
    """Carry out the subcommand and print its result.

    Returns the format of the key stored (``None`` if not known) and the policy set, if any.
    """
    if args.command == "provision":
        stored = client.provision(key)
        for line in format_keys([stored]) if stored else [f"stored {args.file}"]:
            print(line, file=out)
        return (stored.format if stored else None), None
    if args.command == "keys":
        keys = client.keys()
        lines = (
            [json.dumps([k.to_json() for k in keys], indent=2)] if args.json else format_keys(keys)
        )
        for line in lines:
            print(line, file=out)
        return None, None
    if args.command == "retire":
        client.retire(args.fingerprint)
        print(f"retired {args.fingerprint}", file=out)
        return None, None
    changed = bool(args.mode or args.format)
    policy = client.set_policy(mode=args.mode, format=args.format) if changed else client.policy()
    lines = [json.dumps(policy.to_json())] if args.json else format_policy(policy)
    for line in lines:
        print(line, file=out)
    return None, policy if changed else None


def prepare(
    args: argparse.Namespace,
    stdin: TextIO,
    environ: Mapping[str, str],
    prompt: Callable[[str], str],
    stderr: TextIO,
) -> tuple[bytes, ssl.SSLContext, str]:
    """Everything checked before connecting: the key file's octets (empty unless
    ``provision``), the TLS context and the password."""
    key = read_key_file(args.file, stdin) if args.command == "provision" else b""
    if args.command == "retire":
        try:
            normalize_fingerprint(args.fingerprint)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    context = ssl_context(args, stderr)
    return key, context, obtain_password(args.user, environ, prompt)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``transcoder-client`` and return its exit status (keyword arguments
    replace the process's environment and streams, for tests and embedding)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.insecure or args.cafile) and args.security == "plain":
        parser.error("--insecure and --cafile need --starttls or --tls")
    try:
        env = os.environ if environ is None else environ
        key, context, password = prepare(args, stdin or sys.stdin, env, prompt, err)
        port = args.port or DEFAULT_PORTS[args.security]
        with XKeyClient.connect(
            args.host, port, args.user, password, args.security, context, args.timeout
        ) as client:
            run_command(client, args, key, out, err)
    except (UsageError, XKeyConnectionError) as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_CODES["failed"]
    except XKeyError as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_CODES["refused"]
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    return EXIT_CODES["ok"]
