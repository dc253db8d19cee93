"""``twistd transcoder``: command-line options and the service that wires the layers.

Layout of ``--data DIR`` (created on first start)::

    DIR/accounts        accounts file (scrypt hashes), see transcoder.auth
    DIR/mail/<address>/ one Maildir++ per account
    DIR/tls/            server.crt / server.key (self-signed unless --tls-cert/--tls-key)
    DIR/keys.db         the keystore (SQLite): users' keys and policies, see transcoder.keys
                        (unless --keystore postgresql://... names a shared one)
    DIR/audit.jsonl     the key audit log: one JSON object per line (twisted.logger events;
                        with --keystore postgresql://, the database's audit table instead)
    DIR/view-secret     32 random octets every view's randomness derives from (unless
                        --view-secret names another file), see transcoder.view_secret
    DIR/server-keys/    the server's own key pairs (issue 16), see
                        transcoder.keys.server_keys_files
    DIR/quarantine/     with --clamd: delivered messages clamd found infected, per
                        account (0700, outside the mail tree), see transcoder.scan.delivery
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import ssl
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from transcoder.auth import AccountsFile, make_portal
from transcoder.auth.verification_cache import VerificationCache
from transcoder.backend.auth import make_backend_portal
from transcoder.backend.connection import BackendAddress, BackendSettings, check_settings
from transcoder.backend.server import BackendIMAP4Factory
from transcoder.cms.settings import CmsSettings
from transcoder.errors import ConfigurationError, TranscoderError
from transcoder.imap.connection_limits import ConnectionLimitFactory
from transcoder.imap.proxy_protocol import server_endpoint
from transcoder.imap.server import TranscodingIMAP4Factory
from transcoder.imap.settings import MiB, ServerSettings
from transcoder.imap.view_epoch import ServerViewsService
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.keystore import is_postgresql
from transcoder.keys.server_keys_files import ServerKeyFiles, start_server_keys
from transcoder.layers import ThreadPoolService, key_layer, keystore_changes, transcoding_layer
from transcoder.listening import OptionListener
from transcoder.scan import ClamdScanner
from transcoder.scan.delivery import SCAN_THREADS, SWEEP_SECONDS, DeliveryScan, DeliveryWatcher
from transcoder.signing.signers import ServerSigning
from transcoder.store import MaildirStore
from transcoder.store.maildir import SERVER_RESCAN_INTERVAL
from transcoder.tls import TLSFiles, ensure_self_signed, load_pem_pair

DEFAULT_IMAP = "tcp:1143:interface=127.0.0.1"
DEFAULT_IMAPS = "tcp:1993:interface=127.0.0.1"
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class Options(usage.Options):
    """Options of ``twistd transcoder``."""

    synopsis = "--data DIR [--imap ENDPOINT] [--imaps ENDPOINT|none] [options]"

    optParameters = [
        ["data", "d", None, "Data directory (mail, accounts, TLS files); created if missing."],
        [
            "keystore",
            None,
            None,
            "Keys and policies in a PostgreSQL database shared by several servers,"
            " postgresql://USER@HOST:PORT/DB (default: SQLite file DIR/keys.db).",
        ],
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
        ["gpg", None, "gpg", "The gpg binary (GnuPG 2.1 or later) for OpenPGP keys and mail."],
        [
            "openpgp-encoder",
            None,
            "native",
            "PGP/MIME encryption: native (in the server; gpg only for keys it cannot serve)"
            " or gpg (one gpg process per message).",
        ],
        [
            "smime-cipher",
            None,
            "aes256-cbc",
            "S/MIME content cipher: aes256-cbc, aes128-cbc, aes256-gcm or aes128-gcm.",
        ],
        ["smime-rsa-padding", None, "pkcs1v15", "RSA key transport: pkcs1v15 or oaep."],
        [
            "view-cache-size",
            None,
            "1024",
            "Size cap of the transcoded-view cache, in MiB (0: no cache; views recomputed).",
        ],
        [
            "view-secret",
            None,
            None,
            "File of the 32-octet view secret, shared by servers that must serve the same views"
            " (default: DIR/view-secret, created on first start).",
        ],
        ["gpg-processes", None, "0", "Concurrent gpg encryptions (0: one per CPU)."],
        ["max-connections", None, "1000", "Connections served at once, in total."],
        [
            "max-connections-per-address",
            None,
            "50",
            "Connections served at once per client address (an IPv6 /64 is one address).",
        ],
        ["login-deadline", None, "120", "Seconds a client has to log in, however busy it is."],
        [
            "auth-cache-ttl",
            None,
            "300",
            "Seconds a successful login is remembered, sparing scrypt (0: never).",
        ],
        [
            "backend",
            None,
            None,
            "Serve the mail of an existing IMAP server, imap://HOST:PORT or imaps://HOST:PORT;"
            " logins are checked there (issue 11; docs/design.md, Backend front).",
        ],
        [
            "backend-ca",
            None,
            None,
            "PEM file of CA certificates the imaps:// backend's certificate must chain to"
            " (default: the system's trust store).",
        ],
        [
            "spool-dir",
            None,
            None,
            "With --backend: where messages from the backend larger than 64 KiB are spooled"
            " (unnamed files, 0700 directory; default: DATA/spool).",
        ],
        ["server-smime-cert", None, None, "PEM certificate of the server's S/MIME encryption key."],
        ["server-smime-key", None, None, "PEM private key of --server-smime-cert."],
        [
            "server-smime-sign-cert",
            None,
            None,
            "PEM certificate of the server's S/MIME signing key.",
        ],
        ["server-smime-sign-key", None, None, "PEM private key of --server-smime-sign-cert."],
        [
            "server-openpgp-key",
            None,
            None,
            "The server's OpenPGP secret key (separate encryption and signing subkeys).",
        ],
        [
            "clamd",
            None,
            None,
            "Scan every APPEND (after decryption) and every message delivered into new/"
            " with clamd: unix:/path/clamd.ctl or tcp:HOST:PORT; infected: NO [CANNOT] or"
            " DIR/quarantine/, clamd down: NO [UNAVAILABLE] or held in new/.",
        ],
        [
            "delivery-scan-interval",
            None,
            str(int(SWEEP_SECONDS)),
            "With --clamd: seconds between sweeps of every new/ that scan what was just"
            " delivered, so infected mail is quarantined even where nobody looks; 0: scan"
            " a delivery only when a session looks at its mailbox.",
        ],
    ]
    optFlags = [
        ["no-plaintext-loopback", None, "Refuse LOGIN before TLS even from loopback clients."],
        ["obscure-subject", None, "Replace the outer Subject of transcoded mail with [...]."],
        [
            "sign-views",
            None,
            "Sign views with the server's signing key for accounts that did not choose"
            " (XKEY POLICY SIGN ON|OFF chooses).",
        ],
    ]

    def postOptions(self) -> None:
        """Check the combination of options."""
        if not self["data"]:
            raise usage.UsageError("--data DIR is required")
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError("--log-level must be one of " + ", ".join(LOG_LEVELS))
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        self["max-literal-size"] = _number(self, "max-literal-size", 1024)
        self["view-cache-size"] = _number(self, "view-cache-size", 0)
        self["gpg-processes"] = _number(self, "gpg-processes", 0)
        if self["openpgp-encoder"] not in ("native", "gpg"):
            raise usage.UsageError("--openpgp-encoder must be native or gpg")
        for name in ("max-connections", "max-connections-per-address", "login-deadline"):
            self[name] = _number(self, name, 1)
        self["auth-cache-ttl"] = _number(self, "auth-cache-ttl", 0)
        try:
            CmsSettings(self["smime-cipher"], self["smime-rsa-padding"])
        except ConfigurationError as e:
            raise usage.UsageError(str(e)) from None
        self["backend"] = _backend_settings(self)
        if self["keystore"] and not is_postgresql(self["keystore"]):
            raise usage.UsageError("--keystore takes a postgresql:// URI")
        for pair in (
            ("server-smime-cert", "server-smime-key"),
            ("server-smime-sign-cert", "server-smime-sign-key"),
        ):
            if bool(self[pair[0]]) != bool(self[pair[1]]):
                raise usage.UsageError(f"--{pair[0]} and --{pair[1]} go together")
        if self["clamd"]:
            try:
                ClamdScanner.parse(self["clamd"])
            except ConfigurationError as e:
                raise usage.UsageError(str(e)) from None
        self["delivery-scan-interval"] = _number(self, "delivery-scan-interval", 0)


def _backend_settings(options: usage.Options) -> BackendSettings | None:
    """``--backend`` and ``--backend-ca`` as BackendSettings (None without ``--backend``)."""
    if not options["backend"]:
        if options["backend-ca"]:
            raise usage.UsageError("--backend-ca goes with --backend imaps://HOST:PORT")
        if options["spool-dir"]:
            raise usage.UsageError("--spool-dir goes with --backend")
        return None
    # DATA/spool by default, not TMPDIR: /tmp is often a tmpfs (RAM, which would undo the
    # constant memory of 100 MB messages) shared with other users, while DATA is the
    # service's own, private and on a disk the hoster sized (README, Backend front).
    spool = os.path.abspath(options["spool-dir"] or os.path.join(options["data"], "spool"))
    try:
        settings = BackendSettings(
            BackendAddress.parse(options["backend"]), options["backend-ca"], spool_dir=spool
        )
        if options["backend-ca"] and not settings.address.tls:
            raise usage.UsageError("--backend-ca goes with --backend imaps://HOST:PORT")
        check_settings(settings)
    except ConfigurationError as e:
        raise usage.UsageError(str(e)) from None
    return settings


def _number(options: usage.Options, name: str, minimum: int) -> int:
    """Option ``name`` as an integer of at least ``minimum``."""
    try:
        value = int(options[name])
    except ValueError:
        raise usage.UsageError(f"--{name} must be a whole number") from None
    if value < minimum:
        raise usage.UsageError(f"--{name} must be at least {minimum}")
    return value


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
        max_connections=options["max-connections"],
        max_connections_per_address=options["max-connections-per-address"],
        login_deadline=float(options["login-deadline"]),
        allow_plaintext_loopback=not options["no-plaintext-loopback"],
    )


def filter_global_log(level: str) -> None:
    """Drop events below ``level`` from every observer twistd installed.

    twistd has no log-level option of its own; the observers it began
    logging to are re-registered behind a level filter.  Only call it once
    logging has begun (:class:`LogLevelService`): before, the only observer is
    the global log beginner's start-up buffer, and wrapping it would have the
    buffer record its own replay.
    """
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    observers = list(getattr(globalLogPublisher, "_observers", []))
    for observer in observers:
        globalLogPublisher.removeObserver(observer)
        globalLogPublisher.addObserver(FilteringLogObserver(observer, [predicate]))


class LogLevelService(service.Service):
    """Applies ``--log-level`` when the service starts, once twistd logs to its observers."""

    def __init__(self, level: str) -> None:
        self.level = level
        self._filtered = False

    def privilegedStartService(self) -> None:
        """Filter before the listeners bind (twistd calls this once logging has begun)."""
        super().privilegedStartService()
        self._filter()

    def startService(self) -> None:
        """Filter here when embedded without ``privilegedStartService``."""
        super().startService()
        self._filter()

    def _filter(self) -> None:
        if not self._filtered:
            self._filtered = True
            filter_global_log(self.level)


def limit_connections(factory: TranscodingIMAP4Factory) -> ConnectionLimitFactory:
    """The IMAP factory behind the connection limits of its settings."""
    s = factory.settings
    return ConnectionLimitFactory(
        factory, s.max_connections, s.max_connections_per_address, s.login_throttle.ipv6_prefix
    )


#: Listen queue of a TCP endpoint string that sets none.  Twisted's default, 50,
#: overflowed with 200 clients connecting at once (benchmarks/imap_load.py): the
#: kernel dropped connections that then waited for a greeting that never came.
LISTEN_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=LISTEN_BACKLOG`` added when it is TCP and sets none."""
    inner = (
        description[len("haproxy:") :]
        if description.lower().startswith("haproxy:")
        else description
    )
    kind = inner.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6") and "backlog=" not in inner.lower():
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def listener(description: str, factory: Any, option: str = "imap") -> StreamServerEndpointService:
    """A listening service on an endpoint string (``haproxy:`` reads the PROXY header first);
    a port in use stops the start with one line naming ``--option`` (transcoder.listening)."""
    from twisted.internet import reactor

    endpoint = server_endpoint(reactor, with_backlog(description))
    return OptionListener(endpoint, factory, option, description)


def verification_cache(options: dict[str, Any], accounts: AccountsFile) -> VerificationCache | None:
    """The login cache of ``--auth-cache-ttl`` (None when 0), keyed with fresh random bytes."""
    from twisted.internet import reactor

    if not options["auth-cache-ttl"]:
        return None
    key = os.urandom(32)  # per process, never stored: see transcoder.auth.verification_cache
    return VerificationCache(key, reactor, accounts.generation, ttl=options["auth-cache-ttl"])


def server_keys(options: dict[str, Any], data: Path) -> ServerKeyFiles:
    """``DIR/server-keys/`` with a current key for every role (the hoster's or generated)."""
    from datetime import UTC, datetime

    def path(name: str) -> Path | None:
        return Path(options[name]) if options.get(name) else None

    files = ServerKeyFiles(data / "server-keys", gpg_binary=options["gpg"])
    start_server_keys(
        files,
        datetime.now(UTC),
        (path("server-smime-cert"), path("server-smime-key")),
        (path("server-smime-sign-cert"), path("server-smime-sign-key")),
        path("server-openpgp-key"),
    )
    return files


def delivery_scan(
    options: dict[str, Any], data: Path, keys: KeyAccess
) -> tuple[DeliveryScan | None, service.IService | None]:
    """With ``--clamd``: the gate scanning what MDAs deliver into ``new/``, and the services
    it needs: its thread pool and, unless ``--delivery-scan-interval 0``, the sweeps."""
    from twisted.internet import reactor, threads
    from twisted.python.threadpool import ThreadPool

    if not options.get("clamd"):
        return None, None
    pool = ThreadPool(*SCAN_THREADS, name="transcoder-scan")

    def run(f: Any, *args: Any) -> Any:
        return threads.deferToThreadPool(reactor, pool, f, *args)

    scanner = ClamdScanner.parse(options["clamd"])

    def audit(event: str, account: str, facts: dict[str, Any]) -> Any:
        return keys.store.record_event(event, account, keys.now(), facts, {"via": "delivery"})

    gate = DeliveryScan(
        scanner, data / "mail", data / "quarantine", run, reactor, keys.server, audit=audit
    )
    services = service.MultiService()
    ThreadPoolService(pool).setServiceParent(services)  # first in, last out
    interval = options.get("delivery-scan-interval", SWEEP_SECONDS)
    if interval:
        mark = data / "delivery-sweep"
        DeliveryWatcher(gate, interval, run, reactor, time.time, mark).setServiceParent(services)
    return gate, services


def makeService(options: dict[str, Any]) -> service.IService:
    """Build the transcoder service from parsed :class:`Options`."""
    data = Path(options["data"]).absolute()
    try:
        prepare_data_dir(data)
        context = tls_context(options, data)
        keys, key_service = key_layer(options, data)
        files = server_keys(options, data)
        signing = ServerSigning(files, bool(options["sign-views"]))
        keys = replace(keys, server=files, signing=signing)
        transcoding, transcoding_service = transcoding_layer(options, data)
    except (OSError, TranscoderError) as e:
        raise SystemExit(f"transcoder: {e}") from None
    factory_class = TranscodingIMAP4Factory
    gate, scan_service = None, None
    if options["backend"] is not None:  # logins and mail on the backend (issue 11)
        from twisted.internet import reactor

        spool = Path(options["backend"].spool_dir)
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        portal = make_backend_portal(reactor, options["backend"])
        factory_class = BackendIMAP4Factory
    else:
        gate, scan_service = delivery_scan(options, data, keys)
        store = MaildirStore(
            data / "mail", rescan_interval=SERVER_RESCAN_INTERVAL, intake_gate=gate
        )
        accounts = AccountsFile(data / "accounts")
        portal = make_portal(accounts, store, cache=verification_cache(options, accounts))
    factory = factory_class(
        portal,
        settings_from(options),
        context_factory=context,
        keys=keys,
        transcoding=transcoding,
    )
    # Every APPEND is streamed to clamd after decryption (issue 16; transcoder.scan); so is
    # every new/ file of the built-in store (gate).  A front's mail is delivered to the
    # backend: scanning it there is the MTA's (clamav-milter) or Dovecot's job.
    factory.scanner = ClamdScanner.parse(options["clamd"]) if options.get("clamd") else None
    if factory.scanner is not None and gate is None:
        Logger().info(
            "--clamd with --backend scans the APPENDs through this front only; delivered"
            " mail goes to the backend: scan it at the MTA (README, Virus scanning)"
        )
    top = service.MultiService()
    if options["log-level"] != "debug":
        LogLevelService(options["log-level"]).setServiceParent(top)
    # First in, last out: the listeners stop before the key threads do.
    key_service.setServiceParent(top)
    transcoding_service.setServiceParent(top)
    if scan_service is not None:
        scan_service.setServiceParent(top)
    # A shared keystore: other fronts' changes drop views and end stale sessions here too.
    changes = keystore_changes(keys, transcoding.cache)
    if changes is not None:
        changes.setServiceParent(top)
    # A new view secret or transcoder setting changes every view: announced before listening.
    ServerViewsService(keys, transcoding).setServiceParent(top)
    # Wrappers, outermost first: PROXY (haproxy: endpoints) -> TLS -> limits -> IMAP.
    limited = limit_connections(factory)
    listener(options["imap"], limited).setServiceParent(top)
    if options["imaps"].lower() != "none":
        tls_factory = TLSMemoryBIOFactory(context, False, limited)
        listener(options["imaps"], tls_factory, "imaps").setServiceParent(top)
    return top
