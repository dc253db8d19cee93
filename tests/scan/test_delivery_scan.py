"""The virus scan of delivered mail (issue 16) on a real Maildir store and a real clamd: a
file dropped into new/ is held, unseen, until clamd answers; EICAR (in clear or encrypted
to the server's key) goes to the quarantine, logged and audited; clean mail is shown as
delivered; clamd down holds everything (logged once) until it answers again."""

from __future__ import annotations

import io
import os
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, globalLogPublisher
from zope.interface.verify import verifyObject

from tests.scan.clamd_fixture import EICAR, EICAR_FOUND, Clamd, running_clamd
from tests.store.helpers import ADDRESS, NOW, run_now
from transcoder.keys.async_store import audit_to_logger, clock_now
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys_files import ServerKeyFiles
from transcoder.scan import ClamdScanner
from transcoder.scan.delivery import (
    RETRY_SECONDS,
    SWEEP_OVERLAP,
    SWEEP_SECONDS,
    DeliveryScan,
    DeliveryWatcher,
    FileIdentity,
    recent_deliveries,
)
from transcoder.store import MaildirStore
from transcoder.store.intake import IIntakeGate

CLEAN = b"Subject: clean\r\n\r\nnothing to see here\r\n"
INFECTED = b"Subject: infected\r\n\r\n" + EICAR + b"\r\n"


@pytest.fixture(scope="module")
def clamd() -> Iterator[Clamd]:
    with running_clamd() as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(NOW)
    return c


@contextmanager
def logged() -> Iterator[list[LogEvent]]:
    """Every log event emitted meanwhile."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


class Queued:
    """A scan pool the test empties when it chooses (the scans themselves are real)."""

    def __init__(self) -> None:
        self.work: list[tuple[defer.Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.work.append((d, f, args))
        return d

    def run_all(self) -> None:
        work, self.work = self.work, []
        for d, f, args in work:
            defer.maybeDeferred(f, *args).chainDeferred(d)


def make(
    tmp_path: Path,
    clock: Clock,
    address: str,
    keys: ServerKeyFiles | None = None,
    run: Callable[..., defer.Deferred[Any]] = run_now,
) -> tuple[MaildirStore, DeliveryScan]:
    # The audit trail is a real keystore's, as the server wires it (service.delivery_scan).
    keystore = KeyStore(tmp_path / "keys.db", audit=audit_to_logger(Logger()))

    def audit(event: str, account: str, facts: dict[str, Any]) -> defer.Deferred[None]:
        now = clock_now(clock)
        return defer.maybeDeferred(keystore.record_event, event, account, now, facts)

    gate = DeliveryScan(
        ClamdScanner(address, timeout=30),
        tmp_path / "mail",
        tmp_path / "quarantine",
        run,
        clock,
        keys,
        audit=audit,
    )
    return MaildirStore(tmp_path / "mail", clock, run_blocking=run_now, intake_gate=gate), gate


def shown(store: MaildirStore) -> list[bytes]:
    """What a session selecting INBOX now sees."""
    session = store.account(ADDRESS).select("INBOX")
    assert session is not None
    state = session.state
    try:
        return [(state.cur / state.records[uid].filename).read_bytes() for uid in session.uids]
    finally:
        session.close()


def audit_events(events: list[LogEvent]) -> list[dict[str, Any]]:
    return [e["audit"] for e in events if "audit" in e]


def test_eicar_is_quarantined_clean_is_shown(tmp_path: Path, clock: Clock, clamd: Clamd) -> None:
    """EICAR and a clean message delivered: the first session sees neither (held until
    scanned), the next only the clean one, byte for byte; EICAR is in quarantine/<account>/,
    logged with signature, account and file, and audited."""
    pool = Queued()
    store, gate = make(tmp_path, clock, clamd.address, run=pool)
    assert verifyObject(IIntakeGate, gate)
    bad = store.deliver(ADDRESS, io.BytesIO(INFECTED))
    store.deliver(ADDRESS, io.BytesIO(CLEAN))
    with logged() as events:
        assert shown(store) == [] and shown(store) == []  # scans asked for, no verdict yet
        assert len(pool.work) == 2  # one scan per file, however often sessions look
        pool.run_all()
        assert shown(store) == [CLEAN]
        assert shown(store) == [CLEAN]
    quarantined = tmp_path / "quarantine" / ADDRESS / bad
    assert quarantined.read_bytes() == INFECTED
    assert (tmp_path / "quarantine").stat().st_mode & 0o777 == 0o700
    assert not list((tmp_path / "mail" / ADDRESS / "new").iterdir())
    (warning,) = [e for e in events if "quarantined" in e.get("log_format", "")]
    assert (warning["signature"], warning["account"], warning["file"]) == (
        EICAR_FOUND,
        ADDRESS,
        bad,
    )
    (audit,) = audit_events(events)
    assert audit["event"] == "delivery-quarantined"
    assert (audit["account"], audit["file"], audit["signature"]) == (ADDRESS, bad, EICAR_FOUND)


def test_subfolder_delivery_is_scanned(tmp_path: Path, clock: Clock, clamd: Clamd) -> None:
    """A delivery into another mailbox (a .Folder of the Maildir++) is held and scanned too;
    the log names the mailbox."""
    store, _ = make(tmp_path, clock, clamd.address)
    store.account(ADDRESS).create("Lists")
    bad = store.deliver(ADDRESS, io.BytesIO(INFECTED), mailbox="Lists")
    with logged() as events:
        for _ in range(2):
            session = store.account(ADDRESS).select("Lists")
            assert session is not None and list(session.uids) == []
            session.close()
    assert (tmp_path / "quarantine" / ADDRESS / bad).exists()
    (audit,) = audit_events(events)
    assert audit["mailbox"] == ".Lists"


@pytest.fixture(scope="module")
def server_keys(tmp_path_factory: pytest.TempPathFactory) -> ServerKeyFiles:
    keys = ServerKeyFiles(tmp_path_factory.mktemp("sk") / "server-keys", gpg_binary="no-gpg")
    keys.ensure(datetime.now(UTC) - timedelta(minutes=1))
    return keys


def encrypted_to_server(keys: ServerKeyFiles, entity: bytes, tmp_path: Path) -> bytes:
    """A message encrypted with openssl cms to the server's current S/MIME encryption key."""
    key = keys.current_for(KeyFormat.SMIME, KeyUsage.ENCRYPT)
    assert key is not None
    (tmp_path / "server.pem").write_bytes(key.public)
    (tmp_path / "entity").write_bytes(entity)
    cms = ["openssl", "cms", "-encrypt", "-binary", "-aes-256-gcm"]
    out = subprocess.run(
        [*cms, "-in", str(tmp_path / "entity"), str(tmp_path / "server.pem")],
        capture_output=True,
        check=True,
    ).stdout
    return b"From: mallory@example.net\r\nSubject: for the server\r\n" + out


def test_encrypted_eicar_is_decrypted_then_quarantined(
    tmp_path: Path, clock: Clock, clamd: Clamd, server_keys: ServerKeyFiles
) -> None:
    """EICAR encrypted to the server's key (no EICAR octets on the wire) is decrypted for the
    scan and quarantined, the audit naming the key; a clean encrypted one is stored as
    delivered."""
    store, _ = make(tmp_path, clock, clamd.address, server_keys)
    infected = encrypted_to_server(
        server_keys, b"Content-Type: text/plain\r\n\r\n" + EICAR + b"\r\n", tmp_path
    )
    clean = encrypted_to_server(server_keys, b"Content-Type: text/plain\r\n\r\nfine\r\n", tmp_path)
    assert EICAR not in infected
    bad = store.deliver(ADDRESS, io.BytesIO(infected))
    store.deliver(ADDRESS, io.BytesIO(clean))
    with logged() as events:
        shown(store)
        # As delivered (openssl's bare LFs made CRLF, as for every delivery), not decrypted.
        assert shown(store) == [clean.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")]
    assert (tmp_path / "quarantine" / ADDRESS / bad).read_bytes() == infected
    (audit,) = audit_events(events)
    key = server_keys.current_for(KeyFormat.SMIME, KeyUsage.ENCRYPT)
    assert key is not None and audit["decrypted_with"] == key.fingerprint


def test_clamd_down_holds_delivery_until_it_answers(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """clamd stopped: delivered mail stays in new/, unseen, however often sessions look; the
    outage is logged once; once clamd answers again (after the retry delay) it is shown."""
    store, gate = make(tmp_path, clock, clamd.address)
    clamd.stop()
    try:
        with logged() as events:
            store.deliver(ADDRESS, io.BytesIO(CLEAN))
            assert shown(store) == []
            store.deliver(ADDRESS, io.BytesIO(CLEAN.replace(b"clean", b"second")))
            for _ in range(3):
                assert shown(store) == []
                clock.advance(RETRY_SECONDS)
            assert gate.outage
            assert len(list((tmp_path / "mail" / ADDRESS / "new").iterdir())) == 2
        outages = [e for e in events if "unavailable" in e.get("log_format", "")]
        assert len(outages) == 1, outages
    finally:
        clamd.start()
    with logged() as events:
        clock.advance(RETRY_SECONDS)
        for _ in range(3):
            found = shown(store)
    assert len(found) == 2 and not gate.outage
    assert any("answers again" in e.get("log_format", "") for e in events)


def test_file_changed_after_scan_is_scanned_again(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """A verdict belongs to the file it was given for: a new/ file rewritten after a clean
    scan (EICAR now) is scanned again and quarantined, never shown."""
    pool = Queued()
    store, _ = make(tmp_path, clock, clamd.address, run=pool)
    name = store.deliver(ADDRESS, io.BytesIO(CLEAN))
    assert shown(store) == []
    pool.run_all()  # clean
    path = tmp_path / "mail" / ADDRESS / "new" / name
    path.write_bytes(INFECTED + b"more octets")
    assert shown(store) == []  # not the file found clean: scanned again
    pool.run_all()
    assert shown(store) == []
    assert (tmp_path / "quarantine" / ADDRESS / name).read_bytes() == INFECTED + b"more octets"


def test_file_taken_meanwhile_is_no_outage(tmp_path: Path, clock: Clock, clamd: Clamd) -> None:
    """A held file another program removes before its scan runs: forgotten, not an outage
    (nothing logged as unavailable, nothing quarantined), and the gate keeps scanning."""
    pool = Queued()
    store, gate = make(tmp_path, clock, clamd.address, run=pool)
    name = store.deliver(ADDRESS, io.BytesIO(CLEAN))
    assert shown(store) == []
    (tmp_path / "mail" / ADDRESS / "new" / name).unlink()
    with logged() as events:
        pool.run_all()
    assert not gate.outage
    assert not [e for e in events if "unavailable" in e.get("log_format", "")]
    assert not (tmp_path / "quarantine").exists()
    store.deliver(ADDRESS, io.BytesIO(CLEAN))
    assert shown(store) == []
    pool.run_all()
    assert shown(store) == [CLEAN]


def test_large_delivery_is_streamed(tmp_path: Path, clock: Clock, clamd: Clamd) -> None:
    """A 50 MB delivered message is scanned in constant memory (Python's peak allocation
    stays under 2 MiB) and shown once clean."""
    store, gate = make(tmp_path, clock, clamd.address)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    new = tmp_path / "mail" / ADDRESS / "new"
    store.account(ADDRESS)
    with open(new / "1700000000.M1P1.big", "wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        for _ in range(50 * 1024 * 1024 // len(line)):
            f.write(line)
    path = new / "1700000000.M1P1.big"
    tracemalloc.start()
    try:
        examined = gate.examine(path, FileIdentity.of(path.stat()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert examined.signature is None
    assert peak < 2 * 1024 * 1024, peak


def watching(
    gate: DeliveryScan,
    clock: Clock,
    wall: Callable[[], float] = time.time,
    mark: Path | None = None,
) -> Any:
    """A started DeliveryWatcher of ``gate`` (sweeps run at once, paced by ``clock``)."""
    watcher = DeliveryWatcher(gate, SWEEP_SECONDS, run_now, clock, wall, mark)
    watcher.startService()
    return watcher


def test_a_sweep_quarantines_eicar_where_nobody_looks(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """With the watcher, EICAR delivered into a mailbox no session has open is in quarantine
    one interval later, logged and audited; each delivery is scanned once by the sweeps; the
    clean one stays in new/ with no verdict kept, so a session that looks has it scanned
    again and sees it."""
    scans: list[str] = []

    def counted(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        if f.__name__ == "examine":
            scans.append(args[0].name)
        return run_now(f, *args)

    store, gate = make(tmp_path, clock, clamd.address, run=counted)
    store.account(ADDRESS).create("Lists")
    watcher = DeliveryWatcher(gate, SWEEP_SECONDS, counted, clock, time.time)
    watcher.startService()
    try:
        bad = store.deliver(ADDRESS, io.BytesIO(INFECTED), mailbox="Lists")
        good = store.deliver(ADDRESS, io.BytesIO(CLEAN))
        with logged() as events:
            clock.advance(SWEEP_SECONDS - 1)
            assert not scans  # not before the interval
            clock.advance(1)
        assert (tmp_path / "quarantine" / ADDRESS / bad).read_bytes() == INFECTED
        (audit,) = audit_events(events)
        assert (audit["event"], audit["mailbox"]) == ("delivery-quarantined", ".Lists")
        assert (tmp_path / "mail" / ADDRESS / "new" / good).exists()
        assert sorted(scans) == sorted([bad, good]) and gate.held_count() == 0
        clock.advance(SWEEP_SECONDS)  # the next sweep's overlap finds them: not again
        assert len(scans) == 2 and gate.held_count() == 0
        assert shown(store) == [CLEAN]
        assert scans[2:] == [good]
    finally:
        watcher.stopService()


def test_a_sweep_lists_only_the_new_dirs_changed_since(tmp_path: Path, clock: Clock) -> None:
    """recent_deliveries reports a file renamed into new/ since ``since``, with its identity,
    and does not list a new/ whose own mtime is older (nothing was added to it)."""
    store, _ = make(tmp_path, clock, "unix:/nonexistent")
    name = store.deliver(ADDRESS, io.BytesIO(CLEAN))
    path = tmp_path / "mail" / ADDRESS / "new" / name
    since = time.time() - 10
    assert recent_deliveries(tmp_path / "mail", since) == [(path, FileIdentity.of(path.stat()))]
    os.utime(path.parent, (since - 100, since - 100))  # as if nothing came in since
    assert recent_deliveries(tmp_path / "mail", since) == []
    assert recent_deliveries(tmp_path / "mail", since - 200) == [
        (path, FileIdentity.of(path.stat()))
    ]


def test_what_waited_before_the_start_is_left_to_sessions(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """Sweeps report arrivals since the start only (a backlog is never swept, however
    large): EICAR that was in new/ before is quarantined when a session looks."""
    store, gate = make(tmp_path, clock, clamd.address)
    bad = store.deliver(ADDRESS, io.BytesIO(INFECTED))
    watcher = watching(gate, clock, wall=lambda: time.time() + 2 * SWEEP_OVERLAP)
    try:
        clock.advance(SWEEP_SECONDS)
        assert (tmp_path / "mail" / ADDRESS / "new" / bad).exists()
        assert shown(store) == []
        assert (tmp_path / "quarantine" / ADDRESS / bad).exists()
    finally:
        watcher.stopService()


def test_what_came_while_the_server_was_stopped_is_swept_at_the_start(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """The mark records where the last sweep began: EICAR delivered while no watcher ran
    is quarantined by the first sweep after the restart, with no session; a mark that
    holds no time is logged and counts as none (the first start: left to sessions)."""
    store, gate = make(tmp_path, clock, clamd.address)
    mark = tmp_path / "delivery-sweep"
    watcher = watching(gate, clock, mark=mark)
    clock.advance(SWEEP_SECONDS)
    watcher.stopService()
    assert abs(float(mark.read_text()) - time.time()) < 60
    bad = store.deliver(ADDRESS, io.BytesIO(INFECTED))
    later = lambda: time.time() + 2 * SWEEP_OVERLAP  # noqa: E731 (the restart comes later)
    watcher = watching(gate, clock, wall=later, mark=mark)
    try:
        clock.advance(SWEEP_SECONDS)
        assert (tmp_path / "quarantine" / ADDRESS / bad).read_bytes() == INFECTED
    finally:
        watcher.stopService()
    again = store.deliver(ADDRESS, io.BytesIO(INFECTED))
    mark.write_text("yesterday\n")
    with logged() as events:
        watcher = watching(gate, clock, wall=later, mark=mark)
    try:
        assert any("holds no time" in e.get("log_format", "") for e in events)
        clock.advance(SWEEP_SECONDS)
        assert (tmp_path / "mail" / ADDRESS / "new" / again).exists()
    finally:
        watcher.stopService()


def test_a_swept_delivery_is_scanned_once_clamd_answers_again(
    tmp_path: Path, clock: Clock, clamd: Clamd
) -> None:
    """clamd down when the sweep finds EICAR: held in new/; once clamd answers again the
    gate's own retry scans it -- no session, no later sweep needed -- and quarantines it."""
    store, gate = make(tmp_path, clock, clamd.address)
    watcher = watching(gate, clock)
    clamd.stop()
    try:
        bad = store.deliver(ADDRESS, io.BytesIO(INFECTED))
        clock.advance(SWEEP_SECONDS)
        assert gate.outage and (tmp_path / "mail" / ADDRESS / "new" / bad).exists()
    finally:
        clamd.start()
    clock.advance(RETRY_SECONDS)
    assert not gate.outage
    assert (tmp_path / "quarantine" / ADDRESS / bad).read_bytes() == INFECTED
    watcher.stopService()


def services(top: Any) -> list[Any]:
    """Every service under ``top`` (a MultiService tree)."""
    found = []
    for child in top:
        found.append(child)
        if hasattr(child, "__iter__"):
            found += services(child)
    return found


def test_service_wiring_with_and_without_backend(tmp_path: Path) -> None:
    """--clamd on the built-in store: a scan pool of its own, the gate on the store and the
    sweeps (none with --delivery-scan-interval 0); with
    --backend (delivery goes to the backend): no gate, and the start says so in one log line;
    without --clamd: neither."""
    from transcoder.layers import ThreadPoolService
    from transcoder.service import Options, makeService

    made: list[Any] = []

    def start(*args: str) -> tuple[list[Any], list[LogEvent]]:
        options = Options()
        options.parseOptions(["--data", str(tmp_path / "data"), "--imaps", "none", *args])
        with logged() as events:
            made.append(top := makeService(options))
        pools = [s.pool.name for s in services(top) if isinstance(s, ThreadPoolService)]
        return pools, events

    def watchers() -> list[DeliveryWatcher]:
        return [s for s in services(made[-1]) if isinstance(s, DeliveryWatcher)]

    clamd = ("--clamd", "unix:/run/clamav/clamd.ctl")
    pools, events = start(*clamd)
    assert "transcoder-scan" in pools
    (watcher,) = watchers()
    assert watcher.interval == SWEEP_SECONDS
    start(*clamd, "--delivery-scan-interval", "0")
    assert not watchers()
    pools, events = start(*clamd, "--backend", "imap://127.0.0.1:143")
    assert "transcoder-scan" not in pools
    (notice,) = [e for e in events if "--clamd with --backend" in e.get("log_format", "")]
    assert "scan it at the MTA" in notice["log_format"]
    pools, events = start()
    assert "transcoder-scan" not in pools
    assert not [e for e in events if "--clamd" in e.get("log_format", "")]
