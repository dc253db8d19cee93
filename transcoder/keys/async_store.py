"""The keystore for the reactor thread: each call runs in a thread pool, a Deferred comes back.

The only module of :mod:`transcoder.keys` that imports Twisted.  The pool and
the reactor are injected; this wrapper neither starts nor stops the pool --
whoever creates it does (e.g. ``reactor.callWhenRunning(pool.start)`` and a
``"before", "shutdown"`` trigger calling ``pool.stop``), or passes
``reactor.getThreadPool()``.  Key validation (gpg subprocesses, certificate
parsing) is blocking too: run it through :meth:`AsyncKeyStore.run`.

:class:`KeystoreChanges` brings a shared PostgreSQL keystore's change
notifications (:class:`~transcoder.keys.pg_keystore.ChangeListener`) onto the
reactor thread: the same two effects a change made in this process has --
the account's cached views dropped, and a new :meth:`AsyncKeyStore.data_version`
that makes every session re-read its view epoch before its next command
(:mod:`transcoder.imap.view_epoch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from transcoder.errors import ClientError
from transcoder.keys.interfaces import IAsyncKeyStore
from transcoder.keys.keystore import KeyStoreBase
from transcoder.keys.model import KeyFormat, Policy, PolicyMode, StoredKey, ValidatedKey
from transcoder.keys.view_epochs import KeystoreWatch, ViewInputs

_T = TypeVar("_T")
log = Logger()


def audit_to_logger(log: Logger | None = None) -> Callable[[dict[str, Any]], None]:
    """An audit hook for :class:`KeyStore` emitting each record as a twisted.logger event.

    Events carry the record under ``audit`` (and the namespace
    ``transcoder.keys.audit`` by default), so an observer can select them and
    write them as JSON lines (``twisted.logger.jsonFileLogObserver``).
    Records are emitted from pool threads; Twisted's log publisher is
    thread-safe, but observers writing files should be too.
    """
    logger = log if log is not None else Logger(namespace="transcoder.keys.audit")

    def emit(record: dict[str, Any]) -> None:
        logger.info("{audit[event]} {audit[account]}", audit=dict(record))

    return emit


def clock_now(clock: IReactorTime) -> datetime:
    """The injected clock's time as an aware UTC datetime (what the keystore takes as ``now``)."""
    return datetime.fromtimestamp(clock.seconds(), UTC)


@implementer(IAsyncKeyStore)
class AsyncKeyStore:
    """Deferred-returning front of a keystore.

    ``store`` is typed as :class:`KeyStoreBase` for mypy (which does not read
    zope declarations); any :class:`~transcoder.keys.interfaces.IKeyStore`
    provider works.
    """

    def __init__(self, store: KeyStoreBase, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self.store = store
        self._reactor = reactor
        self._pool = pool
        self._watch: KeystoreWatch | None = None
        #: The change feed of a shared keystore (PostgreSQL), set by whoever makes it.
        self.changes: KeystoreChanges | None = None

    def run(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> Deferred[_T]:
        """``function(*args, **kwargs)`` in the pool; its result or failure via the Deferred."""
        return deferToThreadPool(self._reactor, self._pool, function, *args, **kwargs)

    def put(
        self,
        account: str,
        key: ValidatedKey,
        now: datetime,
        origin: Mapping[str, str] | None = None,
    ) -> Deferred[StoredKey]:
        """See :meth:`IKeyStore.put`."""
        return self.run(self.store.put, account, key, now, origin)

    def list_keys(self, account: str | None, now: datetime) -> Deferred[list[StoredKey]]:
        """See :meth:`IKeyStore.list_keys`."""
        return self.run(self.store.list_keys, account, now)

    def get(self, account: str, fingerprint: str, now: datetime) -> Deferred[StoredKey | None]:
        """See :meth:`IKeyStore.get`."""
        return self.run(self.store.get, account, fingerprint, now)

    def retire(
        self,
        account: str,
        fingerprint: str,
        now: datetime,
        origin: Mapping[str, str] | None = None,
    ) -> Deferred[StoredKey]:
        """See :meth:`IKeyStore.retire`."""
        return self.run(self.store.retire, account, fingerprint, now, origin)

    def purge(
        self, fingerprint: str, now: datetime, origin: Mapping[str, str] | None = None
    ) -> Deferred[int]:
        """See :meth:`IKeyStore.purge`."""
        return self.run(self.store.purge, fingerprint, now, origin)

    def active_key(
        self, account: str, format: KeyFormat | None, now: datetime
    ) -> Deferred[StoredKey | None]:
        """See :meth:`IKeyStore.active_key`."""
        return self.run(self.store.active_key, account, format, now)

    def get_policy(self, account: str, now: datetime) -> Deferred[Policy]:
        """See :meth:`IKeyStore.get_policy`."""
        return self.run(self.store.get_policy, account, now)

    def set_policy(
        self,
        account: str,
        now: datetime,
        mode: PolicyMode | None = None,
        format: KeyFormat | None = None,
        origin: Mapping[str, str] | None = None,
        sign: bool | None = None,
    ) -> Deferred[Policy]:
        """See :meth:`IKeyStore.set_policy`."""
        return self.run(self.store.set_policy, account, now, mode, format, origin, sign)

    def record_refusal(
        self,
        account: str,
        error: ClientError,
        now: datetime,
        fingerprint: str | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> Deferred[None]:
        """See :meth:`IKeyStore.record_refusal`."""
        return self.run(self.store.record_refusal, account, error, now, fingerprint, origin)

    def record_event(
        self,
        event: str,
        account: str,
        now: datetime,
        facts: Mapping[str, Any],
        origin: Mapping[str, str] | None = None,
    ) -> Deferred[None]:
        """See :meth:`IKeyStore.record_event`."""
        return self.run(self.store.record_event, event, account, now, facts, origin)

    def view_inputs(
        self, account: str, now: datetime, with_keys: bool = True
    ) -> Deferred[ViewInputs]:
        """See :meth:`IKeyStore.view_inputs`."""
        return self.run(self.store.view_inputs, account, now, with_keys)

    def data_version(self) -> int | None:
        """A number that changes with every commit to the keystore (on this thread, cheap).

        SQLite: :class:`~transcoder.keys.view_epochs.KeystoreWatch` on the file.
        PostgreSQL: the count of changes :attr:`changes` heard of, ``None``
        while it is not listening (then every command re-reads its epoch).
        ``None`` too for a keystore that is neither.  For the reactor thread only.
        """
        if self.changes is not None:
            return self.changes.version
        path = getattr(self.store, "path", None)
        if path is None:
            return None
        if self._watch is None:
            self._watch = KeystoreWatch(path)
        return self._watch.version()

    def view_epoch(self, account: str, now: datetime) -> Deferred[int]:
        """See :meth:`IKeyStore.view_epoch`."""
        return self.run(self.store.view_epoch, account, now)


class KeystoreChanges(service.Service):
    """A shared keystore's changes, heard by a listener thread, acted on in the reactor.

    ``listen(on_change, on_state)`` makes the listener (a
    :class:`~transcoder.keys.pg_keystore.ChangeListener` with ``start`` and
    ``stop``); its callbacks come from its thread and are handed to the
    reactor.  Each change of an account calls every ``on_account`` callback
    (the view cache's ``invalidate_account``) and moves :attr:`version` on;
    while the listener is not connected :attr:`version` is ``None``, and once
    it is again the version moves on too (changes missed meanwhile are not
    known: every session re-reads its epoch).  A change of ``*`` (server-wide
    view settings) moves the version only: cached views name the settings
    they were made under, so none is served under new ones.
    """

    def __init__(
        self,
        listen: Callable[[Callable[[str], None], Callable[[bool], None]], Any],
        reactor: IReactorFromThreads,
        on_account: list[Callable[[str], None]] | None = None,
    ) -> None:
        self._reactor = reactor
        self.on_account = list(on_account or [])
        #: Changes heard (reactor thread); ``None`` while not listening.
        self.version: int | None = None
        self._heard = 0
        self._listener = listen(self._from_thread(self.changed), self._from_thread(self.listening))

    def _from_thread(self, function: Callable[[Any], None]) -> Callable[[Any], None]:
        def call(value: Any) -> None:
            self._reactor.callFromThread(function, value)

        return call

    def changed(self, account: str) -> None:
        """``account`` changed (``*``: every account's server-wide settings)."""
        self._heard += 1
        if self.version is not None:
            self.version = self._heard
        if account != "*":
            for callback in self.on_account:
                callback(account)

    def listening(self, up: bool) -> None:
        """The listener connected (``True``) or lost its connection."""
        self._heard += 1
        self.version = self._heard if up else None
        if not up and self.running:  # not the listener's own stop
            log.warn("keystore change notifications lost: epochs re-read at every command")

    def startService(self) -> None:
        """Start the listener thread."""
        super().startService()
        self._listener.start()

    def stopService(self) -> Any:
        """Stop the listener thread (it notices within its poll interval; a daemon thread
        still connecting to an unreachable server is not waited for past a second)."""
        stopped = super().stopService()
        self._listener.stop(timeout=1.0)
        return stopped
