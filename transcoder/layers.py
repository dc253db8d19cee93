"""The key layer and the transcoding layer, built for ``makeService``.

Each builder returns what the IMAP factory needs plus the service that owns
the layer's threads, so that ``twistd`` starts them before the listeners and
stops them after.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from twisted.application import service
from twisted.internet import threads
from twisted.logger import LogEvent, Logger, globalLogPublisher, jsonFileLogObserver
from twisted.python.threadpool import ThreadPool

from transcoder.cms.settings import CmsSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.imap.view_stream import stream_starter
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore, KeystoreChanges, audit_to_logger
from transcoder.keys.audit_file import AuditLog
from transcoder.keys.keystore import KeyStore, KeyStoreBase
from transcoder.keys.smime_chain import load_trust_anchors
from transcoder.openpgp.errors import GpgFailed
from transcoder.openpgp.keyring import Keyring
from transcoder.openpgp.pool import GpgPool
from transcoder.transcoders.interfaces import Transcoder
from transcoder.transcoders.pgpmime import NativePgpMimeTranscoder, PgpMimeTranscoder
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder
from transcoder.view_secret import load_view_secret

#: The twisted.logger namespace of key audit events (see transcoder.keys.keystore).
AUDIT_NAMESPACE = "transcoder.keys.audit"
#: Threads validating keys (gpg subprocesses) and running keystore statements.
KEY_THREADS = (1, 4)
MiB = 1024 * 1024

log = Logger()


class ThreadPoolService(service.Service):
    """Starts a thread pool with the server and joins its threads when it stops."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        """Start the pool."""
        super().startService()
        self.pool.start()

    def stopService(self) -> Any:
        """Stop the pool: work in progress finishes, then its threads are joined."""
        self.pool.stop()
        return super().stopService()


def open_audit_log(path: Path) -> AuditLog:
    """``path`` opened for appending audit lines, created private (0600); see
    :mod:`transcoder.keys.audit_file` (``transcoder-admin audit prune`` may replace it)."""
    return AuditLog(path)


def audit_file_observer(out: IO[str] | AuditLog) -> Callable[[LogEvent], None]:
    """A log observer writing the key audit events, and only those, to ``out`` as JSON lines.

    Audit events come from the keystore's pool threads: writes are
    serialised so that lines never interleave.
    """
    write = jsonFileLogObserver(cast(IO[str], out), recordSeparator="")
    lock = threading.Lock()

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == AUDIT_NAMESPACE and "audit" in event:
            # The Logger object is not JSON: twisted.logger would write it as
            # {"unpersistable": true} on every line, which says nothing.
            record = {key: value for key, value in event.items() if key != "log_logger"}
            with lock:
                write(record)

    return observe


class KeyService(ThreadPoolService):
    """The key layer's thread pool and audit log file, started and stopped with the server.

    Stopping waits for the pool's threads (an XKEY in progress finishes), so
    that twistd can exit; then the keystore is closed.
    """

    def __init__(self, store: KeyStoreBase, pool: ThreadPool, audit_path: Path | None) -> None:
        super().__init__(pool)
        self.store = store
        self.audit_path = audit_path
        self._audit: AuditLog | None = None
        self._observer: Callable[[LogEvent], None] | None = None

    def startService(self) -> None:
        """Open the audit log (none on PostgreSQL: its table is the trail), start the pool."""
        if self.audit_path is not None:
            self._audit = open_audit_log(self.audit_path)
            self._observer = audit_file_observer(self._audit)
            globalLogPublisher.addObserver(self._observer)
        super().startService()

    def stopService(self) -> Any:
        """Stop the pool (joining its threads), then close the audit log and the keystore."""
        stopped = super().stopService()
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
        if self._audit is not None:
            self._audit.close()
        self.store.close()
        return stopped


def open_keystore(
    spec: str | None, data: Path, audit: Callable[[dict[str, Any]], None]
) -> KeyStoreBase:
    """The keystore of ``--keystore`` (a ``postgresql://`` URI), else ``DIR/keys.db``."""
    if spec:
        # Imported here: psycopg is the optional extra "postgresql".
        from transcoder.keys.pg_keystore import PgKeyStore

        return PgKeyStore(spec, audit=audit, pool_size=KEY_THREADS[1])
    return KeyStore(data / "keys.db", audit=audit)


def key_layer(options: dict[str, Any], data: Path) -> tuple[KeyAccess, KeyService]:
    """The keystore (``--keystore``, else ``DIR/keys.db``) behind a thread pool, and the
    service running them."""
    from twisted.internet import reactor

    anchors = tuple(load_trust_anchors(options["smime-ca"])) if options["smime-ca"] else ()
    if shutil.which(options["gpg"]) is None:
        log.warn("{gpg} not found: OpenPGP keys cannot be provisioned", gpg=options["gpg"])
    audit = audit_to_logger(Logger(namespace=AUDIT_NAMESPACE))
    spec = options.get("keystore")
    store = open_keystore(spec, data, audit)
    pool = ThreadPool(*KEY_THREADS, name="transcoder-keys")
    access = KeyAccess(AsyncKeyStore(store, reactor, pool), reactor, anchors, options["gpg"])
    return access, KeyService(store, pool, None if spec else data / "audit.jsonl")


def keystore_changes(keys: KeyAccess, cache: Any) -> service.IService | None:
    """For a shared (PostgreSQL) keystore: the service hearing other fronts' changes.

    Each change drops the account's views from ``cache`` and makes sessions
    re-read their view epoch (:class:`~transcoder.keys.async_store.KeystoreChanges`);
    ``None`` for the SQLite keystore, whose file is watched per command.
    """
    from twisted.internet import reactor

    dsn = getattr(keys.store.store, "dsn", None)
    if dsn is None:
        return None
    from transcoder.keys.pg_keystore import ChangeListener

    def listen(on_change: Callable[[str], None], on_state: Callable[[bool], None]) -> Any:
        return ChangeListener(dsn, on_change, on_state)

    changes = KeystoreChanges(listen, reactor, [cache.invalidate_account])
    keys.store.changes = changes
    return changes


def log_gpg_fallback(key: Any, reason: str) -> None:
    """Log, once per key version, that gpg encrypts to ``key`` instead of the native encoder."""
    log.info(
        "OpenPGP key {fingerprint} of {account} is encrypted to by gpg: {why}",
        fingerprint=key.fingerprint,
        account=key.account,
        why=reason,
    )


def transcoding_layer(
    options: dict[str, Any], data: Path
) -> tuple[TranscodingConfig, ThreadPoolService]:
    """The transcoders (built-in and plugins), the view cache and the transcoding threads."""
    from twisted.internet import reactor

    cms = CmsSettings(cipher=options["smime-cipher"], rsa_padding=options["smime-rsa-padding"])
    keyring = Keyring(data / "gnupg", gpg_binary=options["gpg"])
    try:
        keyring.check_gpg()
    except GpgFailed as e:
        log.warn("OpenPGP transcoding unavailable (fails closed): {why}", why=e.log_detail())
    gpg_processes = options["gpg-processes"] or os.cpu_count() or 2
    builtins: list[Transcoder] = [SmimeTranscoder(cms)]
    if options.get("openpgp-encoder", "native") == "native":
        # The native encoder first; gpg serves the keys it refuses (issue 12).
        builtins.append(NativePgpMimeTranscoder(on_fallback=log_gpg_fallback))
    builtins.append(PgpMimeTranscoder(keyring, GpgPool(gpg_processes)))
    registry, failures = TranscoderRegistry.from_entry_points(builtins)
    for failure in failures:
        log.error(
            "transcoder plugin {name} skipped: {why}", name=failure.entry_point, why=failure.reason
        )
    # Enough threads to keep every gpg process slot and the CPUs busy.
    pool = ThreadPool(1, max(4, 2 * gpg_processes), name="transcoder-views")

    def run_blocking(f: Callable[..., Any], *args: Any) -> Any:
        return threads.deferToThreadPool(reactor, pool, f, *args)

    cache = ViewCache(
        data / "views",
        run_blocking,
        max_bytes=options["view-cache-size"] * MiB,
        streams=stream_starter(reactor.callFromThread),
    )
    secret = load_view_secret(data, options.get("view-secret"))[0]
    config = TranscodingConfig(
        registry, cache, obscure_subject=bool(options["obscure-subject"]), view_secret=secret
    )
    return config, ThreadPoolService(pool)
