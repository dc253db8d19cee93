"""``twistd transcoder``: command-line options and the service that wires the layers.

Layout of ``--data DIR`` (created on first start)::

    DIR/accounts        accounts file (scrypt hashes), see transcoder.auth
    DIR/mail/<address>/ one Maildir++ per account
    DIR/tls/            server.crt / server.key (self-signed unless --tls-cert/--tls-key)
    DIR/keys.db         the keystore (SQLite): users' keys and policies, see transcoder.keys
    DIR/audit.jsonl     the key audit log: one JSON object per line (twisted.logger events)
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

from twisted.application import service, strports
from twisted.internet import ssl
from twisted.logger import (
    FilteringLogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from transcoder.auth import AccountsFile, make_portal
from transcoder.errors import TranscoderError
from transcoder.imap.server import TranscodingIMAP4Factory
from transcoder.imap.settings import MiB, ServerSettings
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore, audit_to_logger
from transcoder.keys.keystore import KeyStore
from transcoder.keys.smime_chain import load_trust_anchors
from transcoder.store import MaildirStore
from transcoder.tls import TLSFiles, ensure_self_signed, load_pem_pair

DEFAULT_IMAP = "tcp:1143:interface=127.0.0.1"
DEFAULT_IMAPS = "tcp:1993:interface=127.0.0.1"
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
#: The twisted.logger namespace of key audit events (see transcoder.keys.keystore).
AUDIT_NAMESPACE = "transcoder.keys.audit"
#: Threads validating keys (gpg subprocesses) and running keystore statements.
KEY_THREADS = (1, 4)

log = Logger()


class Options(usage.Options):
    """Options of ``twistd transcoder``."""

    synopsis = "--data DIR [--imap ENDPOINT] [--imaps ENDPOINT|none] [options]"

    optParameters = [
        ["data", "d", None, "Data directory (mail, accounts, TLS files); created if missing."],
        [
            "imap",
            None,
            DEFAULT_IMAP,
            "Endpoint for IMAP with STARTTLS (a Twisted endpoint string).",
        ],
        [
            "imaps",
            None,
            DEFAULT_IMAPS,
            "Stream endpoint for implicit-TLS IMAP (TLS is added by the server), or 'none'.",
        ],
        ["tls-cert", None, None, "PEM certificate (chain) to use instead of DIR/tls/server.crt."],
        ["tls-key", None, None, "PEM private key to use instead of DIR/tls/server.key."],
        ["max-literal-size", None, str(64 * MiB), "Largest literal (APPEND) accepted, in octets."],
        ["log-level", None, "info", "Lowest log level written: " + ", ".join(LOG_LEVELS) + "."],
        [
            "smime-ca",
            None,
            None,
            "PEM file of CA certificates: S/MIME certificates must chain to one of them"
            " (default: any valid certificate is accepted, self-signed included).",
        ],
        ["gpg", None, "gpg", "The gpg binary (GnuPG 2.1 or later) used to inspect OpenPGP keys."],
    ]
    optFlags = [
        ["no-plaintext-loopback", None, "Refuse LOGIN before TLS even from loopback clients."],
    ]

    def postOptions(self) -> None:
        """Check the combination of options."""
        if not self["data"]:
            raise usage.UsageError("--data DIR is required")
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError("--log-level must be one of " + ", ".join(LOG_LEVELS))
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        try:
            self["max-literal-size"] = int(self["max-literal-size"])
        except ValueError:
            raise usage.UsageError("--max-literal-size must be a number of octets") from None
        if self["max-literal-size"] < 1024:
            raise usage.UsageError("--max-literal-size must be at least 1024")


def prepare_data_dir(data: Path) -> None:
    """Create ``data``'s layout with private permissions (idempotent)."""
    for sub in (data, data / "mail", data / "tls"):
        sub.mkdir(parents=True, exist_ok=True, mode=0o700)
    accounts = data / "accounts"
    if not accounts.exists():
        fd = os.open(accounts, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)


def tls_context(options: dict[str, Any], data: Path) -> ssl.CertificateOptions:
    """The server's TLS context: the hoster's files, or a generated self-signed pair."""
    if options["tls-cert"]:
        files = TLSFiles(Path(options["tls-cert"]), Path(options["tls-key"]))
    else:
        files = ensure_self_signed(data / "tls")
    pem = load_pem_pair(files)
    private = ssl.PrivateCertificate.loadPEM(pem)
    extra = [
        ssl.Certificate.loadPEM(block).original
        for block in _pem_blocks(files.certificate.read_bytes())[1:]
    ]
    return ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=extra,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def _pem_blocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in pem.split(end) if b"-----BEGIN" in block]


def settings_from(options: dict[str, Any]) -> ServerSettings:
    """The IMAP front end's settings from the command line."""
    return ServerSettings(
        max_literal_size=options["max-literal-size"],
        allow_plaintext_loopback=not options["no-plaintext-loopback"],
    )


def filter_global_log(level: str) -> None:
    """Drop events below ``level`` from every observer twistd installed.

    twistd has no log-level option of its own; the observers it began
    logging to are re-registered behind a level filter.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    observers = list(getattr(globalLogPublisher, "_observers", []))
    for observer in observers:
        globalLogPublisher.removeObserver(observer)
        globalLogPublisher.addObserver(FilteringLogObserver(observer, [predicate]))


def open_audit_log(path: Path) -> TextIO:
    """``path`` opened for appending audit lines, created private (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return open(fd, "a", encoding="utf-8")


def audit_file_observer(out: IO[str]) -> Callable[[LogEvent], None]:
    """A log observer writing the key audit events, and only those, to ``out`` as JSON lines.

    Audit events come from the keystore's pool threads: writes are
    serialised so that lines never interleave.
    """
    write = jsonFileLogObserver(out, recordSeparator="")
    lock = threading.Lock()

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == AUDIT_NAMESPACE and "audit" in event:
            with lock:
                write(event)

    return observe


class KeyService(service.Service):
    """The key layer's thread pool and audit log file, started and stopped with the server.

    Stopping waits for the pool's threads (an XKEY in progress finishes), so
    that twistd can exit; then the keystore is closed.
    """

    def __init__(self, store: KeyStore, pool: ThreadPool, audit_path: Path) -> None:
        self.store = store
        self.pool = pool
        self.audit_path = audit_path
        self._audit: TextIO | None = None
        self._observer: Callable[[LogEvent], None] | None = None

    def startService(self) -> None:
        """Open the audit log, then start the pool."""
        super().startService()
        self._audit = open_audit_log(self.audit_path)
        self._observer = audit_file_observer(self._audit)
        globalLogPublisher.addObserver(self._observer)
        self.pool.start()

    def stopService(self) -> Any:
        """Stop the pool (joining its threads), then close the audit log and the keystore."""
        self.pool.stop()
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
        if self._audit is not None:
            self._audit.close()
        self.store.close()
        return super().stopService()


def key_layer(options: dict[str, Any], data: Path) -> tuple[KeyAccess, KeyService]:
    """The keystore at ``DIR/keys.db`` behind a thread pool, and the service running them."""
    from twisted.internet import reactor

    anchors = tuple(load_trust_anchors(options["smime-ca"])) if options["smime-ca"] else ()
    if shutil.which(options["gpg"]) is None:
        log.warn("{gpg} not found: OpenPGP keys cannot be provisioned", gpg=options["gpg"])
    audit = audit_to_logger(Logger(namespace=AUDIT_NAMESPACE))
    store = KeyStore(data / "keys.db", audit=audit)
    pool = ThreadPool(*KEY_THREADS, name="transcoder-keys")
    access = KeyAccess(AsyncKeyStore(store, reactor, pool), reactor, anchors, options["gpg"])
    return access, KeyService(store, pool, data / "audit.jsonl")


def makeService(options: dict[str, Any]) -> service.IService:
    """Build the transcoder service from parsed :class:`Options`."""
    data = Path(options["data"]).absolute()
    try:
        prepare_data_dir(data)
        context = tls_context(options, data)
        keys, key_service = key_layer(options, data)
    except (OSError, TranscoderError) as e:
        raise SystemExit(f"transcoder: {e}") from None
    if options["log-level"] != "debug":
        filter_global_log(options["log-level"])
    store = MaildirStore(data / "mail")
    portal = make_portal(AccountsFile(data / "accounts"), store)
    factory = TranscodingIMAP4Factory(
        portal, settings_from(options), context_factory=context, keys=keys
    )
    top = service.MultiService()
    # First in, last out: the listeners stop before the key threads do.
    key_service.setServiceParent(top)
    strports.service(options["imap"], factory).setServiceParent(top)
    if options["imaps"].lower() != "none":
        tls_factory = TLSMemoryBIOFactory(context, False, factory)
        strports.service(options["imaps"], tls_factory).setServiceParent(top)
    return top
