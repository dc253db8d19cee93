"""``transcoder-admin``: server-side administration on a data directory.

Usage::

    transcoder-admin --data DIR user add ADDRESS [--generate]
    transcoder-admin --data DIR user passwd ADDRESS [--generate]
    transcoder-admin --data DIR user del ADDRESS
    transcoder-admin --data DIR user list
    transcoder-admin --data DIR deliver ADDRESS [--mailbox NAME] < message.eml
    transcoder-admin --data DIR key import ADDRESS FILE [--smime-ca FILE] [--gpg PATH]
    transcoder-admin --data DIR key list [ADDRESS]
    transcoder-admin --data DIR key retire FINGERPRINT
    transcoder-admin --data DIR key purge FINGERPRINT
    transcoder-admin --data DIR policy ADDRESS [--mode always|off] [--format smime|openpgp]
                                        [--sign on|off]
    transcoder-admin [--data DIR] --keystore postgresql://... key|policy|audit ...
    transcoder-admin --data DIR audit list [ADDRESS]
    transcoder-admin --data DIR audit prune --older-than DAYS
    transcoder-admin --data DIR server-key list
    transcoder-admin --data DIR server-key rotate smime|openpgp [--algorithm ec|rsa]
    transcoder-admin --data DIR server-key retire FINGERPRINT
    transcoder-admin --data DIR server-key import smime-encrypt|smime-sign CERT KEY
    transcoder-admin --data DIR server-key import openpgp SECRET-KEY

``server-key`` works on ``DIR/server-keys/`` (the server's own key pairs,
issue 16; :mod:`transcoder.keys.server_keys_files`): a running server sees
the change at its next XKEY SERVER or APPEND.  A retired encryption key
still decrypts; a retired signing key never signs again.

``user add`` and ``user passwd`` read the password from the first line of
standard input when it is not a terminal; on a terminal (or with
``--generate``) they generate one and print it.  Changes to ``DIR/accounts``
take effect on a running server without a restart.

``key import`` validates exactly as ``XKEY PUT`` does (one code path,
:func:`transcoder.keys.provisioning.provision`); give it the server's
``--smime-ca`` and ``--gpg`` so that it accepts what the server would.  The
key commands work on ``DIR/keys.db`` beside a running server and append
their audit records to ``DIR/audit.jsonl``, marked ``"via":
"transcoder-admin"``.  With ``--keystore postgresql://...`` (before the
command, as the servers are given it) the key and policy commands work on
that shared keystore instead, their records go to its ``audit`` table, and
every server listening to it applies the change before its next command.
They then need no accounts file (fronts before Dovecot have none: any
address is taken) and ``--data`` may be left out.

Exit status: 0 on success, 1 when the request is refused (one line on
stderr says why), 2 for a command-line syntax error.  Each command group is
a subparser.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from transcoder.auth.accounts import AccountsFile, normalize_address
from transcoder.errors import ClientError, TranscoderError

if TYPE_CHECKING:
    from transcoder.keys.keystore import KeyStoreBase as KeyStore
    from transcoder.keys.model import StoredKey

#: Length, in bytes of randomness, of generated passwords (~24 characters).
GENERATED_PASSWORD_BYTES = 18


class AdminError(Exception):
    """A refusal to report on one line of stderr, exiting with status 1."""


def _accounts(args: argparse.Namespace) -> AccountsFile:
    """The accounts file of ``--data DIR``."""
    return AccountsFile(Path(args.data) / "accounts")


def _obtain_password(args: argparse.Namespace, stdin: TextIO) -> tuple[str, bool]:
    """``(password, generated)``: stdin's first line, or a fresh random password."""
    if args.generate or stdin.isatty():
        return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES), True
    password = stdin.readline().rstrip("\r\n")
    if not password:
        raise AdminError("no password on standard input (or use --generate)")
    return password, False


def cmd_user_add(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``user add ADDRESS``: create an account (and the data directory if needed)."""
    address = normalize_address(args.address)
    accounts = _accounts(args)
    if accounts.get(address) is not None:
        raise AdminError(f"account {address} already exists")
    password, generated = _obtain_password(args, stdin)
    Path(args.data).mkdir(mode=0o700, parents=True, exist_ok=True)
    accounts.add(address, password)
    # Create the Maildir now, so an MDA (Postfix, procmail) can deliver before
    # the first login.  Imported here: the other ``user`` commands stay Twisted-free.
    from transcoder.store import MaildirStore

    MaildirStore(Path(args.data) / "mail").account(address)
    print(f"added {address}", file=stdout)
    if generated:
        print(f"password: {password}", file=stdout)


def cmd_user_passwd(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``user passwd ADDRESS``: set a new password."""
    address = normalize_address(args.address)
    accounts = _accounts(args)
    if accounts.get(address) is None:
        raise AdminError(f"no account {address}")
    password, generated = _obtain_password(args, stdin)
    accounts.set_password(address, password)
    print(f"changed the password of {address}", file=stdout)
    if generated:
        print(f"password: {password}", file=stdout)


def cmd_user_del(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``user del ADDRESS``: delete an account; its mail stays on disk."""
    address = normalize_address(args.address)
    _accounts(args).remove(address)
    print(f"deleted {address} (its mail is kept)", file=stdout)


def cmd_user_list(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``user list``: one address per line, sorted."""
    for address in _accounts(args).addresses():
        print(address, file=stdout)


def cmd_deliver(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``deliver ADDRESS [--mailbox NAME]``: store the message on stdin in an account's mailbox."""
    address = normalize_address(args.address)
    if _accounts(args).get(address) is None:
        raise AdminError(f"no account {address}; create it with: user add {address}")
    # Imported here so that the ``user`` commands do not load the Twisted-based store.
    from transcoder.store import MaildirStore

    MaildirStore(Path(args.data) / "mail").deliver(address, stdin.buffer, args.mailbox)
    print(f"delivered to {address} ({args.mailbox})", file=stdout)


# -- keys and policy ------------------------------------------------------------
# The key layer is imported inside the commands: the ``user`` commands stay
# free of cryptography and Twisted.


def _existing_account(args: argparse.Namespace, address: str) -> str:
    """``address`` normalized; AdminError when the data directory has no such account.

    With ``--keystore`` and no accounts file (a front before Dovecot: the
    backend holds the accounts) any address is taken as it is.
    """
    normalized = normalize_address(address)
    if args.keystore and (args.data is None or not (Path(args.data) / "accounts").exists()):
        return normalized
    if _accounts(args).get(normalized) is None:
        raise AdminError(f"no account {normalized}")
    return normalized


def _origin() -> dict[str, str]:
    """Who is asking, for the audit records."""
    try:
        operator = getpass.getuser()
    except (KeyError, OSError):
        operator = "unknown"
    return {"via": "transcoder-admin", "operator": operator}


@contextmanager
def _keystore(args: argparse.Namespace) -> Iterator[KeyStore]:
    """``DIR/keys.db``, auditing to ``DIR/audit.jsonl`` as the server does (or ``--keystore``)."""
    from twisted.logger import Logger

    from transcoder.keys.async_store import audit_to_logger
    from transcoder.keys.keystore import KeyStore, is_postgresql
    from transcoder.layers import AUDIT_NAMESPACE, audit_file_observer, open_audit_log

    if args.keystore:  # no accounts file needed: fronts before Dovecot have none
        if not is_postgresql(args.keystore):
            raise AdminError("--keystore takes a postgresql:// URI")
        from transcoder.keys.pg_keystore import PgKeyStore

        with PgKeyStore(args.keystore) as shared:  # its audit table is the trail
            yield shared
        return
    data = Path(args.data)
    if not (data / "accounts").exists():
        raise AdminError(f"{data} is not a transcoder data directory (no accounts file)")
    with open_audit_log(data / "audit.jsonl") as out:
        logger = Logger(namespace=AUDIT_NAMESPACE, observer=audit_file_observer(out))
        with KeyStore(data / "keys.db", audit=audit_to_logger(logger)) as store:
            yield store


def _describe(key: StoredKey) -> str:
    """One line per key: account, format, fingerprint, status, usage, expiry, algorithm."""
    return _describe_all([key])[0]


def _describe_all(keys: Sequence[StoredKey]) -> list[str]:
    """:func:`_describe` for each key, columns aligned across the lines.

    OpenPGP fingerprints (40 hex digits) are shorter than S/MIME ones (64),
    and formats, statuses and usages differ in length: each column is as
    wide as its widest value, so a mixed list reads as a table.
    """
    from transcoder.keys.model import KeyUsage, format_timestamp

    rows = [
        (
            key.account,
            key.format.value,
            key.fingerprint,
            key.status.value,
            ",".join(u.value for u in KeyUsage if u in key.usages),
            format_timestamp(key.not_after) if key.not_after else "never",
            key.key_algorithm,
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [
        " ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _read_key_file(name: str, stdin: TextIO, limit: int) -> bytes:
    """The octets of ``name`` (``-``: standard input), at most ``limit`` of them."""
    if name == "-":
        data = stdin.buffer.read(limit + 1)
    else:
        with open(name, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise AdminError(f"key refused [XKEY-TOOBIG]: {name} is over {limit} octets")
    return data


def cmd_key_import(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``key import ADDRESS FILE``: validate and store a key, as XKEY PUT does."""
    from transcoder.keys.errors import MAX_KEY_BYTES
    from transcoder.keys.provisioning import provision_key
    from transcoder.keys.smime_chain import load_trust_anchors

    address = _existing_account(args, args.address)
    data = _read_key_file(args.file, stdin, MAX_KEY_BYTES)
    anchors = tuple(load_trust_anchors(args.smime_ca)) if args.smime_ca else ()
    with _keystore(args) as store:
        try:
            done = provision_key(
                store,
                address,
                data,
                args.clock(),
                trust_anchors=anchors,
                gpg_binary=args.gpg,
                origin=_origin(),
            )
        except ClientError as e:
            raise AdminError(f"key refused [{e.code}]: {e.text}") from None
    print(f"stored {_describe(done.stored)}", file=stdout)
    for old in done.superseded:
        # The rule is in docs/xkey.md: a newer key of the same format and role retires the older.
        print(f"superseded (now retired) {_describe(old)}", file=stdout)


def cmd_key_list(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``key list [ADDRESS]``: every key (of ADDRESS), one line each, oldest first."""
    address = _existing_account(args, args.address) if args.address else None
    with _keystore(args) as store:
        keys = store.list_keys(address, args.clock())
    for line in _describe_all(keys):
        print(line, file=stdout)


def _owned(store: KeyStore, fingerprint: str, now: datetime) -> list[StoredKey]:
    """Every account's copy of the key ``fingerprint``; AdminError when there is none."""
    from transcoder.keys.model import normalize_fingerprint

    wanted = normalize_fingerprint(fingerprint)
    owned = [key for key in store.list_keys(None, now) if key.fingerprint == wanted]
    if not owned:
        raise AdminError(f"no key with fingerprint {wanted}")
    return owned


def cmd_key_retire(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``key retire FINGERPRINT``: retire the key for the account(s) holding it."""
    now = args.clock()
    with _keystore(args) as store:
        for key in _owned(store, args.fingerprint, now):
            retired = store.retire(key.account, key.fingerprint, now, _origin())
            print(f"retired {_describe(retired)}", file=stdout)


def cmd_key_purge(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``key purge FINGERPRINT``: erase every stored copy of the key, history included."""
    now = args.clock()
    with _keystore(args) as store:
        owners = sorted({key.account for key in _owned(store, args.fingerprint, now)})
        store.purge(args.fingerprint, now, _origin())
    print(f"purged {args.fingerprint.lower()} ({', '.join(owners)})", file=stdout)


def cmd_policy(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``policy ADDRESS [--mode M] [--format F] [--sign S]``: show, or change then show,
    the policy -- each item as it is in effect, and where it comes from."""
    from transcoder.keys.policy import parse_format, parse_mode, parse_sign

    address = _existing_account(args, args.address)
    mode = parse_mode(args.mode) if args.mode else None
    fmt = parse_format(args.format) if args.format else None
    sign = parse_sign(args.sign) if args.sign else None
    with _keystore(args) as store:
        if mode is None and fmt is None and sign is None:
            policy = store.get_policy(address, args.clock())
        else:
            policy = store.set_policy(address, args.clock(), mode, fmt, _origin(), sign)
        default = store.server_setting("sign-views") == "ON"
    print(f"{address} {describe_policy(policy, default)}", file=stdout)


def describe_policy(policy: Any, sign_default: bool) -> str:
    """``MODE m FORMAT f SIGN s``, each value as in effect, with its source when not set.

    A format never set is the newest usable encryption key's; with no such
    key there is none in effect (``NIL``), and MODE ALWAYS would be refused.
    SIGN never set is the server's ``--sign-views`` default, as the last
    server started recorded it (off when none did).
    """
    if policy.format is None:
        fmt = "NIL (none set, and no usable encryption key)"
    elif policy.format_is_explicit:
        fmt = policy.format.value
    else:
        fmt = f"{policy.format.value} (newest key's)"
    signs = "ON" if policy.signs(sign_default) else "OFF"
    sign = signs if policy.sign is not None else f"{signs} (server default)"
    return f"MODE {policy.mode.value} FORMAT {fmt} SIGN {sign}"


def _server_keys(args: argparse.Namespace) -> Any:
    """``DIR/server-keys/`` of an existing data directory."""
    from transcoder.keys.server_keys_files import ServerKeyFiles

    data = Path(args.data)
    if not (data / "accounts").exists():
        raise AdminError(f"{data} is not a transcoder data directory (no accounts file)")
    return ServerKeyFiles(data / "server-keys", gpg_binary=getattr(args, "gpg", "gpg"))


def cmd_server_key_list(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``server-key list``: the server's keys with their dates, oldest first."""
    for key in _server_keys(args).history():
        print(key.describe(), file=stdout)


def cmd_server_key_rotate(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``server-key rotate FORMAT``: new keys for the format; the old ones are retired."""
    from transcoder.keys.model import KeyFormat

    made = _server_keys(args).rotate(KeyFormat(args.format.upper()), args.clock(), args.algorithm)
    for key in made:
        print(f"new {key.describe()}", file=stdout)


def cmd_server_key_retire(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``server-key retire FINGERPRINT``: out of service (decryption keys still decrypt)."""
    print(
        f"retired {_server_keys(args).retire(args.fingerprint, args.clock()).describe()}",
        file=stdout,
    )


def cmd_server_key_import(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``server-key import ROLE FILE [KEY]``: the hoster's key becomes the current one."""
    from transcoder.keys.model import KeyUsage

    files = _server_keys(args)
    first = Path(args.file).read_bytes()
    if args.role == "openpgp":
        if args.key:
            raise AdminError("server-key import openpgp takes one file (the secret key)")
        key = files.import_openpgp(first, args.clock())
    else:
        if not args.key:
            raise AdminError(f"server-key import {args.role} takes CERT and KEY")
        usage = KeyUsage.ENCRYPT if args.role == "smime-encrypt" else KeyUsage.SIGN
        key = files.import_smime(first, Path(args.key).read_bytes(), usage, args.clock())
    print(f"imported {key.describe()}", file=stdout)


Command = Callable[[argparse.Namespace, TextIO, TextIO], None]


def _add_user_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``user`` group: add, passwd, del, list."""
    user = groups.add_parser("user", help="manage accounts (DIR/accounts)")
    commands = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    for name, func, help_text in (
        ("add", cmd_user_add, "create an account"),
        ("passwd", cmd_user_passwd, "change an account's password"),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("address", metavar="ADDRESS", help="login (email address)")
        p.add_argument("--generate", action="store_true", help="generate and print a password")
        p.set_defaults(func=func)
    p = commands.add_parser("del", help="delete an account (its mail is kept)")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_user_del)
    p = commands.add_parser("list", help="list the accounts")
    p.set_defaults(func=cmd_user_list)


def _add_deliver_command(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``deliver`` command."""
    p = groups.add_parser("deliver", help="deliver the message on stdin to an account")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--mailbox", default="INBOX", metavar="NAME", help="default: INBOX")
    p.set_defaults(func=cmd_deliver)


def _add_key_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``key`` group: import, list, retire, purge."""
    key = groups.add_parser("key", help="manage users' keys (DIR/keys.db)")
    commands = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    p = commands.add_parser("import", help="validate and store a certificate or OpenPGP key")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("file", metavar="FILE", help="PEM/DER certificate or OpenPGP key; - for stdin")
    p.add_argument("--smime-ca", metavar="FILE", help="the server's --smime-ca trust anchors")
    p.add_argument("--gpg", default="gpg", metavar="PATH", help="the gpg binary (default: gpg)")
    p.set_defaults(func=cmd_key_import)
    p = commands.add_parser("list", help="list the keys (of one account)")
    p.add_argument("address", metavar="ADDRESS", nargs="?")
    p.set_defaults(func=cmd_key_list)
    for name, func, help_text in (
        ("retire", cmd_key_retire, "retire a key (kept in the history, no longer used)"),
        ("purge", cmd_key_purge, "erase a key, history included"),
    ):
        p = commands.add_parser(name, help=help_text)
        p.add_argument("fingerprint", metavar="FINGERPRINT")
        p.set_defaults(func=func)


def _add_policy_command(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``policy`` command."""
    p = groups.add_parser("policy", help="show or change an account's transcoding policy")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--mode", type=str.lower, choices=("always", "off"))
    p.add_argument("--format", type=str.lower, choices=("smime", "openpgp"))
    p.add_argument(
        "--sign",
        type=str.lower,
        choices=("on", "off"),
        help="sign views with the server's signing key (default: the server's --sign-views)",
    )
    p.set_defaults(func=cmd_policy)


def _add_server_key_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``server-key`` group: list, rotate, retire, import."""
    group = groups.add_parser("server-key", help="the server's own keys (DIR/server-keys)")
    commands = group.add_subparsers(dest="server_key_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="list the server's keys, retired ones included")
    p.set_defaults(func=cmd_server_key_list)
    p = commands.add_parser("rotate", help="new keys for a format; the old ones are retired")
    p.add_argument("format", type=str.lower, choices=("smime", "openpgp"))
    p.add_argument("--algorithm", type=str.lower, choices=("ec", "rsa"), default="ec")
    p.add_argument("--gpg", default="gpg", metavar="PATH", help="the gpg binary (default: gpg)")
    p.set_defaults(func=cmd_server_key_rotate)
    p = commands.add_parser("retire", help="take a server key out of service")
    p.add_argument("fingerprint", metavar="FINGERPRINT")
    p.set_defaults(func=cmd_server_key_retire)
    p = commands.add_parser("import", help="make the hoster's key the current one")
    p.add_argument("role", choices=("smime-encrypt", "smime-sign", "openpgp"))
    p.add_argument("file", metavar="FILE", help="certificate (S/MIME) or secret key (OpenPGP)")
    p.add_argument("key", metavar="KEY", nargs="?", help="the S/MIME private key")
    p.add_argument("--gpg", default="gpg", metavar="PATH", help="the gpg binary (default: gpg)")
    p.set_defaults(func=cmd_server_key_import)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; each command group is a subparser."""
    parser = argparse.ArgumentParser(
        prog="transcoder-admin", description="Administer an imap-transcoder data directory."
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="the server's data directory (required, but for key and policy commands"
        " with --keystore)",
    )
    parser.add_argument(
        "--keystore",
        metavar="URI",
        help="key, policy and audit commands: the servers' shared postgresql:// keystore"
        " (default: DIR/keys.db)",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_user_commands(groups)
    _add_deliver_command(groups)
    _add_key_commands(groups)
    _add_policy_command(groups)
    _add_server_key_commands(groups)
    from transcoder.admin_audit import add_audit_commands  # it imports this module

    add_audit_commands(groups)
    return parser


def _system_clock() -> datetime:
    return datetime.now(UTC)


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    clock: Callable[[], datetime] = _system_clock,
) -> int:
    """Run ``transcoder-admin``; returns the exit status.

    ``clock`` gives the time keys are validated and stored at (tests inject one).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None and not (args.keystore and args.group in ("key", "policy", "audit")):
        parser.error("--data DIR is required (but for key, policy, audit with --keystore)")
    args.clock = clock
    func: Command = args.func
    try:
        func(args, stdin or sys.stdin, stdout or sys.stdout)
    except (AdminError, TranscoderError) as e:
        print(f"transcoder-admin: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # Permissions, a full disk, a missing directory: the operator's to fix.
        where = f": {e.filename}" if e.filename else ""
        print(f"transcoder-admin: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
