"""The gateway virus scan of delivered mail (issue 16): ``new/`` files pass clamd first.

draft-kadobayashi-smime-secureops section 2.2: the gateway scans what it can
decrypt.  With ``--clamd``, a file an MDA drops into a mailbox's ``new/`` is
held there -- no UID, unseen by every session -- until clamd has answered
for it (:class:`DeliveryScan`, the store's :class:`~transcoder.store.intake.IIntakeGate`):

* **clean**: admitted at the mailbox's next refresh (a session's NOOP,
  SELECT, IDLE poll), exactly as delivered;
* **infected**: moved out of the mail tree to ``DIR/quarantine/<account>/``,
  which no IMAP command reaches (a hidden mailbox would still be reachable by
  a SELECT of its name, by RENAME, or by another IMAP server on the same
  Maildir); logged with the signature, account, mailbox and file, and an
  audit event ``delivery-quarantined`` (``audit``: the keystore's trail,
  ``DIR/audit.jsonl`` or PostgreSQL's ``audit`` table);
* **clamd unreachable or no verdict**: fail closed -- the file stays in
  ``new/``, unseen, and is tried again once :data:`RETRY_SECONDS` have passed
  (one probe at a time while clamd is down, then all of them); the outage is
  logged once when it starts and once when it ends, not per message.

A delivered message encrypted to one of the server's own keys (S/MIME or
PGP/MIME, :mod:`transcoder.inbound`, as for APPEND) is decrypted for the
scan, in a temporary file, and the plaintext is scanned; the message is
stored as delivered (decrypting delivered mail into the store is not part of
issue 16: that is what APPEND does, where the user sent it to the server).
A message to a server key that does not decrypt is scanned as it is.

A file is scanned as soon as it is seen: when a session refreshes its
mailbox, and, with a :class:`DeliveryWatcher` (``--delivery-scan-interval``),
when the watcher's sweep of every ``new/`` finds it just delivered -- so an
infected delivery is quarantined within one interval even in a mailbox
nobody looks at.  A clean verdict is kept for the sessions waiting for it
only (a session that looks later has the file scanned again), so verdicts
never pile up for mailboxes nobody reads.

Scans run in a thread pool of their own (:data:`SCAN_THREADS`), streamed
(:meth:`~transcoder.scan.clamd.ClamdScanner.scan` sends 64 KiB chunks), so
neither the reactor nor the thread pool other work uses waits for clamd.
A verdict is bound to the file's identity (inode, size, mtime): a file
changed after its scan is scanned again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from transcoder.files import fsync_dir, write_atomically
from transcoder.inbound import NotDecryptable, decrypt_append_file
from transcoder.keys.server_keys_files import ServerKeyFiles
from transcoder.scan.clamd import ClamdScanner, ScannerUnavailable
from transcoder.store.index import message_file_names
from transcoder.store.intake import IIntakeGate, write_new_file

log = Logger()

#: Seconds a held file waits before clamd is asked again after it was unreachable.
RETRY_SECONDS = 10.0
#: Threads scanning delivered mail (clamd's own MaxThreads caps its side).
SCAN_THREADS = (1, 2)
#: Seconds between two sweeps of every new/ by the DeliveryWatcher (--delivery-scan-interval).
SWEEP_SECONDS = 10.0
#: How far back of the previous sweep's start a sweep looks: file times come from the
#: kernel's coarse clock, which may lag the process's clock by a tick.
SWEEP_OVERLAP = 1.0
#: Verdicts kept before those of vanished files are looked for (then twice as many).
PRUNE_ABOVE = 1000
#: Runs ``f(*args)`` in the scan pool; returns a Deferred of its result.
RunScan = Callable[..., "defer.Deferred[Any]"]
#: Records an audit event ``(event, account, facts)``: the keystore's
#: :meth:`~transcoder.keys.keystore.KeyStoreBase.record_event`; a Deferred.
AuditEvent = Callable[[str, str, dict[str, Any]], "defer.Deferred[None]"]


class FileChanged(Exception):
    """The ``new/`` file is not the one the gate saw (replaced or rewritten): ask again."""


class _Stage(Enum):
    SCANNING = "scanning"
    CLEAN = "clean"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class FileIdentity:
    """What makes a verdict still true of a file: inode, size, modification time."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity of a stat result."""
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Examined:
    """One delivered file's outcome: its signature (None: clean), where it was
    quarantined, which server key decrypted it for the scan."""

    signature: str | None
    quarantined: Path | None = None
    decrypted_with: str | None = None


@dataclass
class _Held:
    identity: FileIdentity
    stage: _Stage
    mailboxes: list[weakref.ref[Any]] = field(default_factory=list)
    retry_at: float = 0.0

    def awaited(self) -> bool:
        """Whether a mailbox session asked for this file and still lives."""
        return any(ref() is not None for ref in self.mailboxes)


@implementer(IIntakeGate)
class DeliveryScan:
    """Holds ``new/`` files until clamd cleared them; quarantines the infected.

    ``mail_root`` is ``DIR/mail`` (accounts are its subdirectories),
    ``quarantine`` is ``DIR/quarantine``; ``server_keys`` decrypts mail
    encrypted to the server (None: scanned as delivered); ``run`` runs the
    blocking scan in the scan pool; ``clock`` paces the retries.
    """

    def __init__(
        self,
        scanner: ClamdScanner,
        mail_root: Path,
        quarantine: Path,
        run: RunScan,
        clock: IReactorTime,
        server_keys: ServerKeyFiles | None = None,
        retry_seconds: float = RETRY_SECONDS,
        audit: AuditEvent | None = None,
    ) -> None:
        self.scanner = scanner
        self.mail_root = mail_root
        self.quarantine = quarantine
        self.server_keys = server_keys
        self._run = run
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._audit = audit
        self._held: dict[Path, _Held] = {}
        self._in_flight = 0
        self._pruned_at = PRUNE_ABOVE
        #: clamd is known to be unreachable (logged once, when it started).
        self.outage = False
        self._retry: IDelayedCall | None = None

    # -- the gate (reactor thread) -------------------------------------------------------

    def admit(self, mailbox: Any, name: str) -> bool:
        """True once clamd found ``new/<name>`` clean; else start or await its scan."""
        path = Path(mailbox.path) / "new" / name
        try:
            identity = FileIdentity.of(os.stat(path))
        except FileNotFoundError:
            self._held.pop(path, None)
            return True  # gone: the pickup skips it
        held = self._held.get(path)
        if held is not None and held.identity != identity:
            held = None  # changed since its scan: scan again
        if held is not None and held.stage is _Stage.CLEAN:
            del self._held[path]
            return True
        if held is None:
            held = self._held[path] = _Held(identity, _Stage.UNAVAILABLE)
        if not any(ref() is mailbox for ref in held.mailboxes):
            held.mailboxes.append(weakref.ref(mailbox))
        if held.stage is _Stage.UNAVAILABLE and self._may_try(held):
            self._start(path, held)
        return False

    def held_count(self) -> int:
        """How many new/ files the gate holds a scan, a verdict or a retry for."""
        return len(self._held)

    def watch(self, path: Path, identity: FileIdentity) -> None:
        """A sweep found ``path`` (a ``new/`` file, as it was when listed) just delivered:
        scan it now unless its scan is under way or known.  Its clean verdict is kept only
        for a session that asked meanwhile (a session asks again when it looks); an
        infected one is quarantined at once, whoever looks."""
        held = self._held.get(path)
        if held is None or held.identity != identity:
            held = self._held[path] = _Held(identity, _Stage.UNAVAILABLE)
        if held.stage is _Stage.UNAVAILABLE and self._may_try(held):
            self._start(path, held)

    def _may_try(self, held: _Held) -> bool:
        if self._clock.seconds() < held.retry_at:
            return False
        # While clamd is down, one probe at a time; the rest wait for its answer.
        return not (self.outage and self._in_flight)

    def _start(self, path: Path, held: _Held) -> None:
        if len(self._held) > self._pruned_at:
            self._forget_gone()
            self._pruned_at = 2 * len(self._held) + PRUNE_ABOVE
        held.stage = _Stage.SCANNING
        self._in_flight += 1
        d = self._run(self.examine, path, held.identity)
        d.addBoth(self._finished, path, held)

    def _finished(self, outcome: Any, path: Path, held: _Held) -> None:
        self._in_flight -= 1
        current = self._held.get(path) is held  # else the file was replaced meanwhile
        if isinstance(outcome, Examined):
            self._available()
            if outcome.signature is not None:
                self._report(path, outcome)  # quarantined whatever came since
                if current:
                    del self._held[path]
            elif current and held.awaited():
                held.stage = _Stage.CLEAN
            elif current:
                del self._held[path]  # found by a sweep, and nobody looks: not kept
        elif isinstance(outcome, Failure) and outcome.check(FileNotFoundError, FileChanged):
            if current:
                del self._held[path]  # taken or rewritten by another program: look again
        else:
            self._unavailable(outcome)
            held.stage = _Stage.UNAVAILABLE
            held.retry_at = self._clock.seconds() + self._retry_seconds
            self._retry_later()
        self._wake(held)

    def _wake(self, held: _Held) -> None:
        for ref in held.mailboxes:
            mailbox = ref()
            if mailbox is not None:
                mailbox.expect_change()

    def _available(self) -> None:
        if self.outage:
            self.outage = False
            log.info(
                "clamd at {address} answers again: delivered mail held in new/ is scanned",
                address=self.scanner.address,
            )
            for path, held in list(self._held.items()):  # those that waited for the probe
                held.retry_at = 0.0
                if held.stage is _Stage.UNAVAILABLE:
                    self._resume(path, held)

    def _unavailable(self, outcome: Any) -> None:
        if self.outage:
            return
        self.outage = True
        why = outcome.getErrorMessage() if isinstance(outcome, Failure) else str(outcome)
        if isinstance(outcome, Failure) and not outcome.check(ScannerUnavailable):
            log.failure("scanning a delivered message failed", outcome)
        log.warn(
            "clamd at {address} unavailable ({why}): delivered mail stays in new/, unseen,"
            " until it answers",
            address=self.scanner.address,
            why=why,
        )

    def _retry_later(self) -> None:
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(self._retry_seconds, self._retry_due)

    def _retry_due(self) -> None:
        self._retry = None
        self._forget_gone()
        for path, held in list(self._held.items()):
            if held.stage is _Stage.UNAVAILABLE:
                self._resume(path, held)

    def _resume(self, path: Path, held: _Held) -> None:
        """Try a held file again: through its session's refresh, or -- found by a sweep,
        with no session to ask -- by scanning it now."""
        if held.awaited():
            self._wake(held)
        elif self._may_try(held):
            self._start(path, held)

    def _forget_gone(self) -> None:
        """Drop verdicts of files no pickup will ask about again (taken by another
        program, their mailbox renamed or deleted meanwhile)."""
        for path in [p for p, held in self._held.items() if held.stage is not _Stage.SCANNING]:
            if not path.exists():
                del self._held[path]

    def _report(self, path: Path, outcome: Examined) -> None:
        account, mailbox = self.where(path)
        log.warn(
            "delivered message quarantined: {signature} in {file} of {account} ({mailbox})"
            " moved to {quarantined}",
            signature=outcome.signature,
            file=path.name,
            account=account,
            mailbox=mailbox,
            quarantined=str(outcome.quarantined),
        )
        if self._audit is None:
            return
        facts = {
            "mailbox": mailbox,
            "file": path.name,
            "signature": outcome.signature,
            "decrypted_with": outcome.decrypted_with,
            "quarantined": str(outcome.quarantined),
        }
        # The message is out of the mailbox already; a trail that cannot take the record
        # (PostgreSQL down) leaves the warning above as the only account of it.
        self._audit("delivery-quarantined", account, facts).addErrback(
            lambda failure: log.failure(
                "the audit trail did not record quarantined {file}", failure, file=path.name
            )
        )

    def where(self, path: Path) -> tuple[str, str]:
        """The account and mailbox directory (``""`` for INBOX) of a ``new/`` file."""
        parts = path.relative_to(self.mail_root).parts
        return parts[0], parts[1] if len(parts) > 3 else ""

    # -- the scan (scan pool thread) -----------------------------------------------------

    def examine(self, path: Path, identity: FileIdentity) -> Examined:
        """Scan the file at ``path`` (decrypted first when it is encrypted to the server);
        move it to the quarantine when infected.  Blocking: runs in the scan pool.

        Raises ScannerUnavailable (clamd down or no verdict), FileChanged (the file
        is not the one seen at ``identity``) and FileNotFoundError (it is gone).
        """
        with open(path, "rb") as source:
            if FileIdentity.of(os.fstat(source.fileno())) != identity:
                raise FileChanged(str(path))
            decrypted = self._decrypted(source)
            try:
                scanned: BinaryIO = source if decrypted is None else decrypted[0]
                verdict = self.scanner.scan(scanned)
            finally:
                if decrypted is not None:
                    decrypted[0].close()
        key = None if decrypted is None else decrypted[1]
        if verdict.signature is None:
            return Examined(None, decrypted_with=key)
        return Examined(verdict.signature, self._quarantine(path), key)

    def _decrypted(self, source: BinaryIO) -> tuple[BinaryIO, str] | None:
        if self.server_keys is None:
            return None
        try:
            found = decrypt_append_file(source, self.server_keys)
        except NotDecryptable:
            found = None  # to a server key but damaged: scanned as delivered
        except Exception:
            log.failure("decrypting a delivered message for its scan failed; scanned as is")
            found = None
        source.seek(0)
        return None if found is None else (found.file, found.fingerprint)

    def _quarantine(self, path: Path) -> Path:
        """Move ``path`` to ``quarantine/<account>/`` (0700), durably, never over a file."""
        account, _ = self.where(path)
        folder = self.quarantine / account
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.quarantine, 0o700)
        name = path.name
        target = folder / name
        suffix = 0
        while target.exists():
            suffix += 1
            target = folder / f"{name}.{suffix}"
        try:
            os.link(path, target)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            with open(path, "rb") as source:  # another file system: copy, then remove
                write_new_file(target, source, canonical=False)
        fsync_dir(folder)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fsync_dir(path.parent)
        return target


def recent_deliveries(mail_root: Path, since: float) -> list[tuple[Path, FileIdentity]]:
    """Every message file in a ``new/`` under ``mail_root`` (each account's INBOX and
    Maildir++ folders, ``.Name``) that arrived at ``since`` or later (its ctime: the MDA's
    rename into ``new/``), with its identity.  A ``new/`` whose own mtime is older has
    had nothing renamed into it since, and is not listed: a sweep costs a ``stat`` per
    quiet mailbox, however much mail waits unread.  Blocking: it runs off the reactor
    thread."""
    found: list[tuple[Path, FileIdentity]] = []
    try:
        accounts = [Path(e.path) for e in os.scandir(mail_root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return found
    for account in accounts:
        maildirs = [account]
        with contextlib.suppress(OSError):
            maildirs += [
                Path(e.path)
                for e in os.scandir(account)
                if e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
        for maildir in maildirs:
            new = maildir / "new"
            try:
                if os.stat(new).st_mtime < since:
                    continue  # no entry added since
            except FileNotFoundError:
                continue
            for name in sorted(message_file_names(new)):
                try:
                    st = os.stat(new / name)
                except FileNotFoundError:
                    continue  # taken meanwhile
                if st.st_ctime >= since:
                    found.append((new / name, FileIdentity.of(st)))
    return found


def read_sweep_mark(path: Path) -> float | None:
    """When the last sweep recorded in ``path`` began (wall-clock seconds); ``None``: no
    usable record (none yet, or unreadable: logged)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warn("delivery sweep mark {path} unreadable: {error}", path=str(path), error=error)
        return None
    try:
        return float(text)
    except ValueError:
        log.warn("delivery sweep mark {path} holds no time: {text!r}", path=str(path), text=text)
        return None


def save_sweep_mark(path: Path, began: float) -> None:
    """Record in ``path`` that a sweep that began at ``began`` handed its files over."""
    write_atomically(path, b"%.6f\n" % began)


class DeliveryWatcher(service.Service):
    """Sweeps every ``new/`` each ``interval`` seconds and has ``gate`` scan what arrived.

    Without it a delivery is scanned when a session refreshes its mailbox;
    with it, within one interval of its arrival, so an infected message is
    quarantined even in a mailbox nobody looks at.  A sweep reports the files
    that arrived since the previous one began (their ctime, the MDA's rename
    into ``new/``, looking :data:`SWEEP_OVERLAP` further back), so a backlog is
    never swept again.  Where the last sweep began is kept in ``mark`` (a
    file, written after each sweep handed its files over), so the first
    sweep after a restart covers what was delivered while the server was
    stopped; at the very first start (no mark) what waits in ``new/`` is
    left to sessions, which scan it when they look -- sweeping a whole store
    at once could keep clamd busy for hours.  The listing and the mark run in
    ``run`` (the scan pool), :meth:`DeliveryScan.watch` on the reactor
    thread.  A failed sweep is logged; sweeps never overlap.  ``wall_clock``
    gives the file system's time (ctimes are wall-clock seconds); ``clock``
    paces the sweeps.
    """

    def __init__(
        self,
        gate: DeliveryScan,
        interval: float,
        run: RunScan,
        clock: IReactorTime,
        wall_clock: Callable[[], float],
        mark: Path | None = None,
    ) -> None:
        self.gate = gate
        self.interval = interval
        self.mark = mark
        self._run = run
        self._wall_clock = wall_clock
        self._since = 0.0
        self._reported: set[Path] = set()
        self._loop = task.LoopingCall(self.sweep)
        self._loop.clock = clock

    def startService(self) -> None:
        """Sweep from the last recorded sweep (else from now) on, every interval."""
        super().startService()
        now = self._wall_clock()
        recorded = read_sweep_mark(self.mark) if self.mark is not None else None
        self._since = now if recorded is None else min(recorded, now)
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        """No more sweeps (one under way finishes in its thread)."""
        if self._loop.running:
            self._loop.stop()
        super().stopService()

    def sweep(self) -> defer.Deferred[None]:
        """One sweep: the files that arrived since the last one began, each to the gate."""
        began = self._wall_clock()
        d = self._run(recent_deliveries, self.gate.mail_root, self._since - SWEEP_OVERLAP)

        def hand_over(found: list[tuple[Path, FileIdentity]]) -> None:
            # The overlap finds the previous sweep's last arrivals again: not twice to the gate.
            self._since, reported = began, self._reported
            self._reported = {path for path, _ in found}
            for path, identity in found:
                if path not in reported:
                    self.gate.watch(path, identity)

        d.addCallback(hand_over)
        if self.mark is not None:
            d.addCallback(lambda _: self._run(save_sweep_mark, self.mark, began))
        d.addErrback(lambda failure: log.failure("sweeping new/ for deliveries failed", failure))
        return d
