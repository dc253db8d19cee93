"""``transcoder-client``: provision and manage your keys on an XKEY server, from a shell.

Usage::

    transcoder-client [CONNECTION] COMMAND [CONNECTION]

    CONNECTION: [--host H] [--port P] [--starttls | --tls | --plain]
                [--cafile FILE | --insecure] [--user ADDRESS] [--config FILE] [--timeout S]

    COMMAND:  configure                      save the CONNECTION options given, once
              provision FILE [--replace]     store a certificate or OpenPGP public key ("-": stdin)
              keys [--json]                  list your keys
              retire FINGERPRINT             retire a key
              policy [--mode always|off] [--format smime|openpgp] [--sign on|off] [--json]
              server-keys [--dir DIR] [--json]
                                             save the server's public keys (XKEY SERVER)
              new-identity smime|openpgp ADDRESS [--dir DIR] [--days N]
                                             make a test identity (no server needed)

Defaults are the server's (``twistd -n transcoder``): ``localhost``, STARTTLS
on port 1143; ``--tls`` is implicit TLS on 1993.  Each setting comes from
the command line, else the environment (``TRANSCODER_HOST``, ``_PORT``,
``_SECURITY``, ``_CAFILE``, ``_USER``), else the config file that
``configure`` writes (:mod:`transcoder.client.settings`).

The password comes from the environment variable ``TRANSCODER_PASSWORD`` or,
when that is unset, a prompt on the terminal -- never the command line, where
other local users could read it.  The server certificate is verified (system
CAs, or ``--cafile``, e.g. the server's generated ``DIR/tls/server.crt``);
``--insecure`` turns verification off, with a warning.  ``--plain`` (no TLS)
sends the password only to a loopback peer.

``provision`` reads the key first: when it would replace a key in force
(the server retires the active key of the same format and role), it shows
that key and asks before storing, unless ``--replace``.  It prints the key
stored and, from the server's answer, each key it superseded.

A change that may alter how mail is served -- a key stored or retired
under ``MODE ALWAYS``, a new mode or format -- is followed by a note on
stderr (:data:`RESYNC_NOTE`): every mailbox then presents a new UIDVALIDITY,
so the user's mail clients download everything again.

Exit status (see :data:`EXIT_CODES`): 0 success; 1 the server refused (one
line on stderr: ``transcoder-client: XKEY-ADDRESS: <server text>``), does
not offer XKEY, answered something malformed, or you declined a replacement;
2 command-line error, unreadable FILE, or connection/TLS/login failure.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from transcoder.client.identity import (
    KINDS,
    IdentityError,
    new_openpgp_identity,
    new_smime_identity,
)
from transcoder.client.keyfile import inspect_key, would_replace
from transcoder.client.model import (
    KeyInfo,
    PolicyInfo,
    ServerKeyInfo,
    XKeyConnectionError,
    XKeyError,
    format_timestamp,
)
from transcoder.client.session import DEFAULT_TIMEOUT, XKeyClient, normalize_fingerprint
from transcoder.client.settings import (
    DEFAULT_PORTS,
    ENVIRONMENT,
    Settings,
    SettingsError,
    config_path,
    from_environment,
    read_config,
    render_config,
    write_config,
)

PROG = "transcoder-client"
#: Printed (on stderr) after a change that may have changed how mail is served (issue 9).
RESYNC_NOTE = (
    f"{PROG}: note: how your mail is served changed, so every mailbox now shows a new "
    "UIDVALIDITY: your mail clients drop the copies they keep and download all messages "
    "again (a full resync), and open connections are ended (they reconnect)"
)
#: Said before a replacement is confirmed, when it will cost a resync.
REPLACE_COST = (
    "mail is served encrypted to that key now (MODE ALWAYS): after the replacement every "
    "mailbox shows a new UIDVALIDITY and your mail clients download all messages again "
    "(a full resync)"
)
PASSWORD_VARIABLE = "TRANSCODER_PASSWORD"
#: The password ``new-identity smime`` protects the PKCS#12 file with (else one is generated).
P12_PASSWORD_VARIABLE = "TRANSCODER_P12_PASSWORD"
#: Exit status of each outcome.
EXIT_CODES = {"ok": 0, "refused": 1, "failed": 2}
__all__ = ["DEFAULT_PORTS", "EXIT_CODES", "RESYNC_NOTE", "main"]


class UsageError(Exception):
    """A problem on our side of the exchange (options, files): exit status 2."""


class Declined(Exception):
    """The user did not confirm replacing a key: nothing stored, exit status 1."""


def _connection_options(parser: argparse.ArgumentParser) -> None:
    """The options saying where and how to connect.

    Given to the main parser and to every command (so they may follow the
    command too), each defaulting to "not given": the environment and the
    config file fill in what the command line leaves out.
    """
    unset = argparse.SUPPRESS
    parser.add_argument("--host", default=unset, help="server name or address (localhost)")
    parser.add_argument("--port", type=int, default=unset, help="default 1143, or 1993 with --tls")
    security = parser.add_mutually_exclusive_group()
    for flag, help_text in (
        ("--starttls", "STARTTLS (the default)"),
        ("--tls", "implicit TLS"),
        ("--plain", "no TLS: to a loopback server only"),
    ):
        security.add_argument(
            flag, dest="security", action="store_const", const=flag[2:], default=unset,
            help=help_text,
        )  # fmt: skip
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cafile",
        default=unset,
        help="PEM file of CA certificates to verify the server with "
        "(for the server's self-signed one: DIR/tls/server.crt)",
    )
    trust.add_argument(
        "--insecure", action="store_true", default=unset, help="do not verify the certificate"
    )
    parser.add_argument("--user", default=unset, help="login name (your address)")
    parser.add_argument("--config", default=unset, metavar="FILE", help="config file to use")
    parser.add_argument("--timeout", type=float, default=unset, help="seconds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exit status 2 on a syntax error, as argparse does)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Provision and manage your S/MIME and OpenPGP keys on an IMAP server "
        "that offers XKEY.",
        epilog=f"Settings come from the command line, else ${', $'.join(ENVIRONMENT.values())}"
        ", else the config file `configure` writes ($XDG_CONFIG_HOME or "
        "~/.config/transcoder/client.conf). The password is read from "
        f"${PASSWORD_VARIABLE} or prompted for. Exit status: 0 success, 1 refused by the "
        "server (or no XKEY, or a replacement declined), 2 usage, connection, TLS or login "
        "failure.",
    )
    _connection_options(parser)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    command("configure", "save the connection options given (and $TRANSCODER_*) for next time")
    provision = command("provision", "store a certificate or OpenPGP key")
    provision.add_argument("file", metavar="FILE", help='key file (PEM, DER, PGP); "-" = stdin')
    provision.add_argument(
        "--replace", action="store_true", help="replace an active key without asking"
    )
    keys = command("keys", "list your keys")
    keys.add_argument("--json", action="store_true", help="print JSON")
    retire = command("retire", "retire a key")
    retire.add_argument("fingerprint", metavar="FINGERPRINT")
    policy = command("policy", "show or change your policy")
    policy.add_argument("--mode", type=str.upper, choices=("ALWAYS", "OFF"))
    policy.add_argument("--format", type=str.upper, choices=("SMIME", "OPENPGP"))
    policy.add_argument(
        "--sign",
        type=str.upper,
        choices=("ON", "OFF"),
        help="have the server sign your views with its signing key (XKEY POLICY SIGN)",
    )
    policy.add_argument("--json", action="store_true", help="print JSON")
    server = command("server-keys", "save the server's own public keys (encrypt APPENDs to them)")
    server.add_argument("--dir", default=".", help="where to write the files (default: .)")
    server.add_argument("--json", action="store_true", help="print JSON")
    listing = command("conversions", "list what the server converts for you (RFC 5259)")
    listing.add_argument("source", nargs="?", default="*", help="source media type (default *)")
    listing.add_argument("target", nargs="?", default="*", help="target media type (default *)")
    convert = command("convert", "fetch one body part converted, e.g. encrypted (RFC 5259)")
    convert.add_argument("mailbox", metavar="MAILBOX")
    convert.add_argument("uid", metavar="UID", type=int)
    convert.add_argument("section", metavar="SECTION", help='part number, e.g. 2 or 1.3 ("" = all)')
    convert.add_argument("target", metavar="TARGET", help="e.g. application/pkcs7-mime")
    convert.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    convert.add_argument(
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="conversion parameter, e.g. --param charset utf-8 (repeatable)",
    )
    identity = commands.add_parser(
        "new-identity", help="make a test S/MIME or OpenPGP identity (no server needed)"
    )
    identity.add_argument("kind", choices=KINDS)
    identity.add_argument("address", metavar="ADDRESS")
    identity.add_argument("--dir", default=".", help="where to write the files (default: .)")
    identity.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    identity.add_argument("--gpg", default="gpg", metavar="PATH", help="gpg binary (openpgp)")
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
    """The policy as ``mode: ...``, ``format: ...`` and (when known) ``sign: ...`` lines."""
    shown = policy.format or "not set yet (the first key you provision sets it)"
    lines = [f"mode: {policy.mode}", f"format: {shown}"]
    if policy.sign is not None:
        lines.append(f"sign: {'ON' if policy.sign else 'OFF'}")
    return lines


def resolve_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The command line over the environment over the config file, then the defaults."""
    try:
        given = Settings(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            security=getattr(args, "security", None),
            cafile=getattr(args, "cafile", None),
            user=getattr(args, "user", None),
        )
        path = config_path(environ, getattr(args, "config", None))
        stored = read_config(path, required=hasattr(args, "config"))
        settings = given.over(from_environment(environ).over(stored)).with_defaults()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    if settings.security == "plain" and (hasattr(args, "cafile") or hasattr(args, "insecure")):
        raise UsageError("--insecure and --cafile need TLS (not --plain)")
    return settings


def ssl_context(settings: Settings, insecure: bool, stderr: TextIO) -> ssl.SSLContext:
    """Verify against the system CAs, or the cafile; ``--insecure`` verifies nothing."""
    if insecure:
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
        return ssl.create_default_context(cafile=settings.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {settings.cafile}: {exc}") from exc


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


def ask_terminal(question: str) -> str:
    """Ask on the controlling terminal (standard input may be the key); EOFError without one."""
    try:
        with open("/dev/tty", "r+", encoding="utf-8") as tty:
            tty.write(question)
            tty.flush()
            answer = tty.readline()
    except OSError:
        raise EOFError from None
    if not answer:
        raise EOFError
    return answer


def confirm_replacement(
    client: XKeyClient,
    key: bytes,
    err: TextIO,
    confirm: Callable[[str], str],
) -> None:
    """Show the active key(s) ``key`` would replace and ask; Declined unless confirmed."""
    facts = inspect_key(key)
    if facts is None:
        return  # not readable here: the server judges it, and reports what it supersedes
    replaced = would_replace(facts, client.keys())
    if not replaced:
        return
    print(
        f"{PROG}: this key replaces your active {facts.format} key, which is then retired "
        "(kept in your key history, no longer used):",
        file=err,
    )
    for line in format_keys(replaced):
        print(f"  {line}", file=err)
    policy = client.policy()
    if policy.mode == "ALWAYS" and policy.format == facts.format:
        print(f"{PROG}: {REPLACE_COST}", file=err)
    try:
        answer = confirm("Replace it? [y/N] ")
    except EOFError:
        raise Declined(
            "not replaced, nothing stored: no terminal to ask on; pass --replace to replace it"
        ) from None
    if answer.strip().lower() not in ("y", "yes"):
        raise Declined("not replaced, nothing stored (pass --replace to replace without asking)")


def run_command(
    client: XKeyClient,
    args: argparse.Namespace,
    key: bytes,
    out: TextIO,
    err: TextIO | None = None,
    confirm: Callable[[str], str] | None = None,
) -> None:
    """Carry out the subcommand and print its result; on ``err``, what a change costs.

    Whether a change may have changed how mail is served is judged from the
    policy: a new policy with ``MODE ALWAYS`` before or after (read before it
    is set); a key stored or retired while the mode is ``ALWAYS`` and the
    key's format is the policy's (not known for a retired key: assumed).
    ``confirm`` asks before ``provision`` replaces an active key (unless
    ``--replace``); ``None`` never asks.
    """
    if args.command == "provision" and confirm is not None and not args.replace:
        confirm_replacement(client, key, err or sys.stderr, confirm)
    sets_policy = args.command == "policy" and bool(args.mode or args.format or args.sign)
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
        result = client.provision_key(key)
        if result.stored is None:
            print(f"stored {args.file}", file=out)
            return None, None
        lines = format_keys([result.stored, *result.superseded])
        print(f"stored:     {lines[0]}", file=out)
        for line in lines[1:]:
            print(f"superseded: {line}", file=out)
        return result.stored.format, None
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
    if args.command == "server-keys":
        save_server_keys(client.server_keys(), Path(args.dir), bool(args.json), out)
        return None, None
    if args.command in ("conversions", "convert"):
        run_conversion(client, args, out)
        return None, None
    changed = bool(args.mode or args.format or args.sign)
    sign = None if args.sign is None else args.sign == "ON"
    policy = (
        client.set_policy(mode=args.mode, format=args.format, sign=sign)
        if changed
        else client.policy()
    )
    lines = [json.dumps(policy.to_json())] if args.json else format_policy(policy)
    for line in lines:
        print(line, file=out)
    return None, policy if changed else None


def run_conversion(client: XKeyClient, args: argparse.Namespace, out: TextIO) -> None:
    """``conversions``: one line per conversion; ``convert``: the converted part, written to
    ``--output`` (a multipart target as a whole MIME entity) or to standard output."""
    try:
        if args.command == "conversions":
            for info in client.conversions(args.source, args.target):
                params = f" ({', '.join(info.parameters)})" if info.parameters else ""
                print(f"{info.source} -> {info.target}{params}", file=out)
            return
        pairs = tuple((str(name), str(value)) for name, value in args.param)
        part = client.convert(args.mailbox, args.uid, args.section, args.target, pairs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data = part.mime_entity() if args.target.lower().startswith("multipart/") else part.data
    if args.output is None:
        out.flush()
        getattr(out, "buffer", sys.stdout.buffer).write(data)
        return
    Path(args.output).write_bytes(data)
    print(f"wrote {args.output} ({len(data)} octets, {args.target})", file=out)


def save_server_keys(
    keys: Sequence[ServerKeyInfo], folder: Path, as_json: bool, out: TextIO
) -> None:
    """Write each server key to ``folder`` (see :meth:`ServerKeyInfo.file_name`) and print
    one line per key (or a JSON list)."""
    folder.mkdir(parents=True, exist_ok=True)
    described = []
    for key in keys:
        path = folder / key.file_name()
        path.write_text(key.material)
        described.append(
            {
                "format": key.format,
                "usage": list(key.usage),
                "fingerprint": key.fingerprint,
                "subkeys": list(key.subkeys),
                "not_before": format_timestamp(key.not_before),
                "not_after": format_timestamp(key.not_after),
                "file": str(path),
            }
        )
        if not as_json:
            usage = ",".join(key.usage)
            until = format_timestamp(key.not_after) or "never"
            print(
                f"{key.format:<7} {usage:<12} {key.fingerprint} until {until} -> {path}", file=out
            )
    if as_json:
        print(json.dumps(described, indent=2), file=out)


def prepare(
    args: argparse.Namespace,
    settings: Settings,
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
    if settings.user is None:
        raise UsageError(
            f"no user: pass --user ADDRESS, set {ENVIRONMENT['user']}, or save it once "
            f"with: {PROG} configure --user ADDRESS"
        )
    context = ssl_context(settings, bool(getattr(args, "insecure", False)), stderr)
    return key, context, obtain_password(settings.user, environ, prompt)


def configure(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str], out: TextIO
) -> None:
    """Write the settings given (and the defaults) to the config file."""
    if settings.user is None:
        raise UsageError("configure needs --user ADDRESS (your login)")
    path = config_path(environ, getattr(args, "config", None))
    if path is None:
        raise UsageError("no home folder to keep the settings in: pass --config FILE")
    if settings.cafile:
        cafile = Path(settings.cafile).resolve()
        ssl_context(Settings(cafile=str(cafile)), False, out)  # loads, or UsageError
        settings = Settings(
            settings.host, settings.port, settings.security, str(cafile), settings.user
        )
    try:
        write_config(path, settings)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"wrote {path}:", file=out)
    for line in render_config(settings).splitlines()[1:]:
        print(f"  {line}", file=out)
    print(f"now, e.g.: {PROG} keys", file=out)


def new_identity(
    args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, now: datetime
) -> None:
    """``new-identity smime|openpgp ADDRESS``: write the files and say what each is for."""
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    try:
        if args.kind == "smime":
            password = environ.get(P12_PASSWORD_VARIABLE) or secrets.token_urlsafe(12)
            written = new_smime_identity(args.address, folder, now, password, days=args.days)
            extra = [f"PKCS#12 password: {password}"]
        else:
            written, fingerprint = new_openpgp_identity(
                args.address, folder, gpg=args.gpg, days=args.days
            )
            extra = [f"fingerprint: {fingerprint}"]
    except IdentityError as exc:
        raise UsageError(str(exc)) from None
    for item in written:
        print(f"wrote {item.path}  ({item.purpose})", file=out)
    for line in extra:
        print(line, file=out)
    print(f"next: {PROG} provision {written[0].path}", file=out)
    print("(a test identity: self-made, its private key unprotected on disk)", file=out)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
    confirm: Callable[[str], str] = ask_terminal,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Run ``transcoder-client`` and return its exit status (keyword arguments
    replace the process's environment, streams, terminal and clock, for tests
    and embedding; an ``environ`` without ``HOME`` reads no config file)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "new-identity":
            new_identity(args, env, out, clock())
            return EXIT_CODES["ok"]
        settings = resolve_settings(args, env)
        if args.command == "configure":
            configure(args, settings, env, out)
            return EXIT_CODES["ok"]
        key, context, password = prepare(args, settings, stdin or sys.stdin, env, prompt, err)
        assert settings.host is not None and settings.port is not None  # with_defaults()
        with XKeyClient.connect(
            settings.host,
            settings.port,
            settings.user or "",
            password,
            settings.security or "starttls",  # type: ignore[arg-type]
            context,
            getattr(args, "timeout", DEFAULT_TIMEOUT),
        ) as client:
            run_command(client, args, key, out, err, confirm)
    except (UsageError, XKeyConnectionError) as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_CODES["failed"]
    except (XKeyError, Declined) as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_CODES["refused"]
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    return EXIT_CODES["ok"]
