"""The keystore's thread-pool front: Deferreds on the reactor, work in the pool."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import Logger, eventAsJSON, formatEvent
from twisted.python.threadpool import ThreadPool
from zope.interface.verify import verifyObject

from tests.keys.factories import ALICE, T0, key, wait_for
from transcoder.keys.async_store import AsyncKeyStore, audit_to_logger, clock_now
from transcoder.keys.errors import NoUsableKey
from transcoder.keys.interfaces import IAsyncKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, PolicyMode


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    """A started two-thread pool, stopped after the test."""
    pool = ThreadPool(minthreads=1, maxthreads=2, name="test-keystore")
    pool.start()
    yield pool
    pool.stop()


@pytest.fixture
def async_store(tmp_path: Path, pool: ThreadPool) -> AsyncKeyStore:
    """An AsyncKeyStore over a real keystore file."""
    return AsyncKeyStore(KeyStore(tmp_path / "keys.db"), reactor, pool)


def test_provides_interface(async_store: AsyncKeyStore) -> None:
    """AsyncKeyStore provides IAsyncKeyStore."""
    assert verifyObject(IAsyncKeyStore, async_store)


@pytest_twisted.inlineCallbacks
def test_operations_run_off_the_reactor_thread(async_store: AsyncKeyStore) -> Any:
    """Keystore calls return Deferreds; the work happens on a pool thread."""
    reactor_thread = threading.get_ident()
    worker_thread = yield async_store.run(threading.get_ident)
    assert worker_thread != reactor_thread
    d = async_store.put(ALICE, key("k"), T0)
    stored = yield d
    assert stored.fingerprint == key("k").fingerprint
    listed = yield async_store.list_keys(ALICE, T0)
    assert [k.fingerprint for k in listed] == [stored.fingerprint]
    policy = yield async_store.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
    assert policy.format is KeyFormat.SMIME
    active = yield async_store.active_key(ALICE, None, T0)
    assert active.fingerprint == stored.fingerprint


@pytest_twisted.inlineCallbacks
def test_refusals_arrive_as_failures(async_store: AsyncKeyStore) -> Any:
    """A NoUsableKey raised in the pool fails the Deferred with that error."""
    with pytest.raises(NoUsableKey):
        yield async_store.retire(ALICE, "00" * 32, T0)


def test_clock_now_reads_the_injected_clock() -> None:
    """clock_now converts the reactor clock's seconds to an aware UTC datetime."""
    clock = Clock()
    clock.advance(T0.timestamp())
    assert clock_now(clock) == T0
    assert clock_now(clock).tzinfo is UTC
    assert clock_now(Clock()) == datetime(1970, 1, 1, tzinfo=UTC)


def test_audit_records_become_logger_events(tmp_path: Path) -> None:
    """audit_to_logger turns each keystore audit record into a twisted.logger event."""
    events: list[dict[str, Any]] = []
    log = Logger(namespace="test.audit", observer=events.append)
    store = KeyStore(tmp_path / "keys.db", audit=audit_to_logger(log))
    store.put(ALICE, key("k"), T0, {"peer": "tcp:192.0.2.1:5000"})
    (event,) = events
    assert event["audit"]["event"] == "key.stored"
    assert event["audit"]["peer"] == "tcp:192.0.2.1:5000"
    assert formatEvent(event) == "key.stored alice@example.org"
    assert json.loads(eventAsJSON(event))["audit"]["fingerprint"] == key("k").fingerprint


class _InlineReactor:
    """callFromThread runs the call at once (the listener's thread is the test's here)."""

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def test_shared_keystore_changes_drop_views_and_move_the_data_version(
    postgresql: Any, pool: ThreadPool
) -> None:
    """Another front's change, heard by the real listener: the account's views are dropped and
    the data version moves on (sessions re-read their epoch); unheard while not listening."""
    from transcoder.keys.async_store import KeystoreChanges
    from transcoder.keys.pg_keystore import ChangeListener, PgKeyStore

    dsn = postgresql.new_database()
    dropped: list[str] = []
    with PgKeyStore(dsn) as mine, PgKeyStore(dsn) as other_front:
        front = AsyncKeyStore(mine, reactor, pool)
        changes = KeystoreChanges(
            lambda on_change, on_state: ChangeListener(dsn, on_change, on_state, retry=0.2),
            _InlineReactor(),  # type: ignore[arg-type]
            [dropped.append],
        )
        front.changes = changes
        assert front.data_version() is None  # not listening yet: every command reads
        changes.startService()
        try:
            wait_for(lambda: front.data_version() is not None)
            before = front.data_version()
            other_front.put(ALICE, key("k"), T0)
            other_front.set_policy(ALICE, T0, mode=PolicyMode.ALWAYS)
            wait_for(lambda: dropped == [ALICE, ALICE])
            after = front.data_version()
            assert after is not None and before is not None and after > before
            changes.changed("*")  # server-wide settings: the version only
            assert dropped == [ALICE, ALICE] and front.data_version() == after + 1
        finally:
            changes.stopService()
