"""``transcoder-admin audit list|prune``: read and cut the key audit trail.

Usage::

    transcoder-admin --data DIR audit list [ADDRESS]
    transcoder-admin --data DIR audit prune --older-than DAYS
    transcoder-admin --keystore postgresql://... audit list|prune ...

The trail is ``DIR/audit.jsonl`` for the SQLite keystore and the ``audit``
table of a shared PostgreSQL keystore (``--keystore``).  ``list`` prints the
records, oldest first, one JSON object per line (the records as written:
event, account, time, the fingerprint and the origin where known).
``prune`` removes the records dated more than DAYS days before now and
records the cut itself (``audit.pruned``, with ``before`` and ``pruned``);
``audit.jsonl`` is rewritten atomically while servers keep appending to it
(:mod:`transcoder.keys.audit_file`).  Neither grows the trail otherwise: run
``prune`` from a timer (``examples/cluster/transcoder-audit-prune.timer``)
to keep a retention period.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from transcoder.admin import AdminError, _origin


def _positive_days(text: str) -> int:
    """``--older-than``: a whole number of days, at least 1."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError("--older-than takes at least 1 day")
    return days


def _audit_file(args: argparse.Namespace) -> Path:
    """``DIR/audit.jsonl`` of a transcoder data directory."""
    data = Path(args.data)
    if not (data / "accounts").exists():
        raise AdminError(f"{data} is not a transcoder data directory (no accounts file)")
    return data / "audit.jsonl"


def _shared_keystore(args: argparse.Namespace) -> Any:
    """The PostgreSQL keystore of ``--keystore`` (auditing only to its table)."""
    from transcoder.keys.keystore import is_postgresql

    if not is_postgresql(args.keystore):
        raise AdminError("--keystore takes a postgresql:// URI")
    from transcoder.keys.pg_keystore import PgKeyStore

    return PgKeyStore(args.keystore)


def cmd_audit_list(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``audit list [ADDRESS]``: the records (of one account), oldest first, one JSON a line."""
    from transcoder.auth.accounts import normalize_address

    account = normalize_address(args.address) if args.address else None
    if args.keystore:
        with _shared_keystore(args) as store:
            records = store.audit_records(account)
    else:
        from transcoder.keys.audit_file import read_audit_records

        records = read_audit_records(_audit_file(args), account)
    for record in records:
        print(json.dumps(record, sort_keys=True), file=stdout)


def cmd_audit_prune(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``audit prune --older-than DAYS``: drop the older records, record the cut."""
    from transcoder.keys.keystore_schema import encode_time

    now = args.clock()
    before = now - timedelta(days=args.older_than)
    if args.keystore:
        with _shared_keystore(args) as store:
            pruned = store.prune_audit(before, now, _origin())
    else:
        pruned = _prune_file(_audit_file(args), before, now)
    print(f"pruned {pruned} audit records dated before {encode_time(before)}", file=stdout)


def _prune_file(path: Path, before: Any, now: Any) -> int:
    """Prune ``audit.jsonl``, then append the ``audit.pruned`` record as the server would."""
    from twisted.logger import Logger

    from transcoder.keys.async_store import audit_to_logger
    from transcoder.keys.audit_file import prune_audit_file
    from transcoder.keys.keystore_schema import encode_time
    from transcoder.layers import AUDIT_NAMESPACE, audit_file_observer, open_audit_log

    pruned = prune_audit_file(path, before)
    record = {
        **_origin(),
        "event": "audit.pruned",
        "account": "*",
        "time": encode_time(now),
        "before": encode_time(before),
        "pruned": pruned,
    }
    with open_audit_log(path) as out:
        audit_to_logger(Logger(namespace=AUDIT_NAMESPACE, observer=audit_file_observer(out)))(
            record
        )
    return pruned


def add_audit_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``audit`` group: list, prune."""
    group = groups.add_parser("audit", help="the key audit trail (audit.jsonl or the table)")
    commands = group.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="print the records (of one account), oldest first")
    p.add_argument("address", metavar="ADDRESS", nargs="?")
    p.set_defaults(func=cmd_audit_list)
    p = commands.add_parser("prune", help="remove the records older than DAYS days")
    p.add_argument("--older-than", type=_positive_days, required=True, metavar="DAYS")
    p.set_defaults(func=cmd_audit_prune)
