"""The keystore for the reactor thread: each call runs in a thread pool, a Deferred comes back.

The only module of :mod:`transcoder.keys` that imports Twisted.  The pool and
the reactor are injected; this wrapper neither starts nor stops the pool --
whoever creates it does (e.g. ``reactor.callWhenRunning(pool.start)`` and a
``"before", "shutdown"`` trigger calling ``pool.stop``), or passes
``reactor.getThreadPool()``.  Key validation (gpg subprocesses, certificate
parsing) is blocking too: run it through :meth:`AsyncKeyStore.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from transcoder.errors import ClientError
from transcoder.keys.interfaces import IAsyncKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, Policy, PolicyMode, StoredKey, ValidatedKey
from transcoder.keys.view_epochs import KeystoreWatch, ViewInputs

_T = TypeVar("_T")


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

    ``store`` is typed as :class:`KeyStore` for mypy (which does not read
    zope declarations); any :class:`~transcoder.keys.interfaces.IKeyStore`
    provider works.
    """

    def __init__(self, store: KeyStore, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self.store = store
        self._reactor = reactor
        self._pool = pool
        self._watch: KeystoreWatch | None = None

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
    ) -> Deferred[Policy]:
        """See :meth:`IKeyStore.set_policy`."""
        return self.run(self.store.set_policy, account, now, mode, format, origin)

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

    def view_inputs(
        self, account: str, now: datetime, with_keys: bool = True
    ) -> Deferred[ViewInputs]:
        """See :meth:`IKeyStore.view_inputs`."""
        return self.run(self.store.view_inputs, account, now, with_keys)

    def data_version(self) -> int | None:
        """A number that changes with every commit to the keystore file (on this thread, cheap).

        See :class:`~transcoder.keys.view_epochs.KeystoreWatch`; ``None`` for a
        keystore that is not a file.  For the reactor thread only.
        """
        path = getattr(self.store, "path", None)
        if path is None:
            return None
        if self._watch is None:
            self._watch = KeystoreWatch(path)
        return self._watch.version()

    def view_epoch(self, account: str, now: datetime) -> Deferred[int]:
        """See :meth:`IKeyStore.view_epoch`."""
        return self.run(self.store.view_epoch, account, now)
