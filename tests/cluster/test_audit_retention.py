"""Audit trail retention: ``transcoder-admin audit list|prune`` on both engines.

SQLite setups keep the trail in ``DIR/audit.jsonl``, which a running server
appends to while ``prune`` rewrites it; PostgreSQL setups keep it in the
keystore's ``audit`` table, which every front writes.  Real server, real
PostgreSQL, the real command line.
"""

from __future__ import annotations

import imaplib
import io
import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.conftest import admin as run_admin_on
from tests.keys.factories import ALICE, BOB, T0, key, later
from tests.postgres import PostgresServer
from transcoder.admin import main
from transcoder.auth import AccountsFile
from transcoder.keys.audit_file import AuditLog, prune_audit_file, read_audit_records
from transcoder.keys.pg_keystore import CHANNEL, PgKeyStore

pytestmark = pytest.mark.integration

#: Now, for the in-process commands; the data fixture's records are dated from it, so that
#: the real command line (the real clock, a moment later) prunes the same ones.
NOW = datetime.now(UTC).replace(microsecond=0)
CUT_30 = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(event: str, account: str, moment: datetime, **facts: Any) -> str:
    """One audit.jsonl line as the server writes it (the record under ``audit``)."""
    record = {"event": event, "account": account, "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    return json.dumps({"audit": {**record, **facts}, "log_namespace": "transcoder.keys.audit"})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory with alice and bob, and an audit.jsonl of four records over 90 days."""
    folder = tmp_path / "data"
    folder.mkdir()
    accounts = AccountsFile(folder / "accounts")
    for address in (ALICE, BOB):
        accounts.add(address, PASSWORD)
    lines = [
        line("key.stored", ALICE, NOW - timedelta(days=90), fingerprint="aa"),
        line("key.stored", BOB, NOW - timedelta(days=45), fingerprint="bb"),
        "not json: kept, as nothing unknown is dropped",
        line("policy.changed", ALICE, NOW - timedelta(days=10), mode="ALWAYS"),
    ]
    (folder / "audit.jsonl").write_text("".join(text + "\n" for text in lines))
    (folder / "audit.jsonl").chmod(0o600)
    return folder


def admin_at(*args: str, clock: datetime = NOW) -> tuple[int, str]:
    """``transcoder-admin ARGS`` in-process with the clock at ``clock``; (status, stdout)."""
    out = io.StringIO()
    return main(list(args), stdout=out, clock=lambda: clock), out.getvalue()


def test_prune_drops_old_records_and_records_the_cut(data: Path) -> None:
    """--older-than 30: the 90- and 45-day-old records go; the rest and an audit.pruned stay."""
    status, out = admin_at("--data", str(data), "audit", "prune", "--older-than", "30")
    assert status == 0
    assert out == f"pruned 2 audit records dated before {CUT_30}\n"
    records = read_audit_records(data / "audit.jsonl")
    assert [r["event"] for r in records] == ["policy.changed", "audit.pruned"]
    assert records[1]["pruned"] == 2 and records[1]["via"] == "transcoder-admin"
    assert "not json" in (data / "audit.jsonl").read_text()
    assert stat.S_IMODE((data / "audit.jsonl").stat().st_mode) == 0o600
    assert [p.name for p in data.iterdir() if "prune" in p.name] == []


def test_list_prints_records_oldest_first_per_account(data: Path) -> None:
    """audit list: one JSON record per line; with ADDRESS only that account's."""
    status, out = admin_at("--data", str(data), "audit", "list")
    assert status == 0
    assert [json.loads(text)["account"] for text in out.splitlines()] == [ALICE, BOB, ALICE]
    status, out = admin_at("--data", str(data), "audit", "list", "Alice@Example.ORG")
    assert [json.loads(text)["event"] for text in out.splitlines()] == [
        "key.stored",
        "policy.changed",
    ]


def test_prune_refuses_less_than_a_day(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--older-than 0 is a syntax error (exit 2): pruning everything takes a deliberate 1."""
    with pytest.raises(SystemExit) as exited:
        admin_at("--data", str(data), "audit", "prune", "--older-than", "0")
    assert exited.value.code == 2
    assert "at least 1 day" in capsys.readouterr().err
    assert len(read_audit_records(data / "audit.jsonl")) == 3


def test_a_writer_holding_the_old_file_appends_to_the_new(data: Path) -> None:
    """A server's open audit log follows the file a prune put in place: no line is lost."""
    path = data / "audit.jsonl"
    with AuditLog(path) as server_log:
        server_log.write(line("key.retired", ALICE, NOW) + "\n")
        assert prune_audit_file(path, NOW - timedelta(days=30)) == 2
        server_log.write(line("key.stored", BOB, NOW) + "\n")
    events = [r["event"] for r in read_audit_records(path)]
    assert events == ["policy.changed", "key.retired", "key.stored"]


def test_lines_appended_during_prunes_all_survive(data: Path) -> None:
    """Four writers append lines, a fifth old-dated ones, while five prunes rewrite the file."""
    path = data / "audit.jsonl"
    stop = threading.Event()
    written: list[set[str]] = [set() for _ in range(5)]

    def write(n: int, moment: datetime) -> None:
        with AuditLog(path) as log:
            i = 0
            while not stop.is_set():
                log.write(line("key.stored", ALICE, moment, fingerprint=f"{n}-{i}") + "\n")
                written[n].add(f"{n}-{i}")
                i += 1

    old = NOW - timedelta(days=400)
    writers = [threading.Thread(target=write, args=(n, NOW if n < 4 else old)) for n in range(5)]
    for writer in writers:
        writer.start()
    rewrites = 0
    for _ in range(2_000):  # each rewrite drops the old-dated lines written since the last
        rewrites += prune_audit_file(path, NOW - timedelta(days=30)) > 0
        if rewrites == 5:
            break
    stop.set()
    for writer in writers:
        writer.join()
    prune_audit_file(path, NOW - timedelta(days=30))
    kept = {r["fingerprint"] for r in read_audit_records(path) if r["event"] == "key.stored"}
    assert rewrites == 5 and kept == set().union(*written[:4])


def _xkey_refused(server: RunningServer, material: bytes) -> None:
    """An XKEY PUT of ``material`` through imaplib, refused (an audit line for alice)."""
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.login(ALICE, PASSWORD)
    client.literal = material  # type: ignore[assignment]
    typ, _ = client._simple_command("XKEY", "PUT")
    assert typ == "NO"
    client.logout()


def test_running_server_keeps_auditing_after_a_prune(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real server: prune with the real command line, then the server's next record is kept."""
    monkeypatch.setitem(imaplib.Commands, "XKEY", ("AUTH", "SELECTED"))
    from tests.integration.conftest import free_port

    running = RunningServer(data, free_port(), free_port())
    running.start()
    try:
        _xkey_refused(running, b"first refusal")
        pruned = run_admin_on(data, "audit", "prune", "--older-than", "30")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.startswith("pruned 2 audit records dated before ")
        _xkey_refused(running, b"second refusal")
    finally:
        running.stop()
    listed = run_admin_on(data, "audit", "list", ALICE)
    events = [json.loads(text)["event"] for text in listed.stdout.splitlines()]
    assert events == ["policy.changed", "key.refused", "key.refused"]
    assert [r["event"] for r in read_audit_records(data / "audit.jsonl")][-2:] == [
        "audit.pruned",
        "key.refused",
    ]


# -- PostgreSQL: the audit table ------------------------------------------------------------


def test_pg_prune_deletes_old_rows_and_notifies_no_front(postgresql: PostgresServer) -> None:
    """prune_audit: rows before the cut-off go, audit.pruned is a row, no NOTIFY is sent."""
    dsn = postgresql.new_database()
    with PgKeyStore(dsn) as store, psycopg.connect(dsn, autocommit=True) as listener:
        store.put(ALICE, key("a"), T0)
        store.put(BOB, key("b"), later(60 * 24 * 40))
        listener.execute(f"LISTEN {CHANNEL}")
        pruned = store.prune_audit(later(60 * 24 * 10), later(60 * 24 * 41), {"via": "test"})
        heard = [n.payload for n in listener.notifies(timeout=0.5)]
        records = store.audit_records()
    assert pruned == 1 and heard == []
    assert [(r["event"], r["account"]) for r in records] == [
        ("key.stored", BOB),
        ("audit.pruned", "*"),
    ]
    assert records[1]["pruned"] == 1 and records[1]["via"] == "test"


def test_pg_admin_list_and_prune(postgresql: PostgresServer) -> None:
    """transcoder-admin --keystore: audit list shows the table; prune --older-than cuts it."""
    dsn = postgresql.new_database()
    with PgKeyStore(dsn) as store:
        store.put(ALICE, key("old"), NOW - timedelta(days=60))
        store.put(ALICE, key("new"), NOW - timedelta(days=1))
    status, out = admin_at("--keystore", dsn, "audit", "list", ALICE)
    assert status == 0
    events = [json.loads(text)["event"] for text in out.splitlines()]
    assert events == ["key.stored", "key.stored", "key.retired"]
    status, out = admin_at("--keystore", dsn, "audit", "prune", "--older-than", "30")
    assert (status, out) == (0, f"pruned 1 audit records dated before {CUT_30}\n")
    status, out = admin_at("--keystore", dsn, "audit", "list")
    events = [json.loads(text)["event"] for text in out.splitlines()]
    assert events == ["key.stored", "key.retired", "audit.pruned"]
