"""``transcoder-admin``: server-side administration on a data directory.

Usage::

    transcoder-admin --data DIR user add ADDRESS [--generate]
    transcoder-admin --data DIR user passwd ADDRESS [--generate]
    transcoder-admin --data DIR user del ADDRESS
    transcoder-admin --data DIR user list
    transcoder-admin --data DIR deliver ADDRESS [--mailbox NAME] < message.eml

``user add`` and ``user passwd`` read the password from the first line of
standard input when it is not a terminal; on a terminal (or with
``--generate``) they generate one and print it.  Changes to ``DIR/accounts``
take effect on a running server without a restart.

Exit status: 0 on success, 1 when the request is refused (one line on
stderr says why), 2 for a command-line syntax error.  Each command group is
a subparser, so later groups (``key``, ``policy``) plug in beside ``user``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from transcoder.auth.accounts import AccountsFile, normalize_address
from transcoder.errors import TranscoderError

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


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser; each command group is a subparser."""
    parser = argparse.ArgumentParser(
        prog="transcoder-admin", description="Administer an imap-transcoder data directory."
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="the server's data directory")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_user_commands(groups)
    _add_deliver_command(groups)
    return parser


def main(
    argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Run ``transcoder-admin``; returns the exit status."""
    args = build_parser().parse_args(argv)
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
