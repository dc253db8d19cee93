"""View epochs: they move exactly when an account's views change, and only ever grow."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.keys.conftest import OpenStore
from tests.keys.factories import ALICE, BOB, T0, key, later
from transcoder.keys.errors import NoUsableKey
from transcoder.keys.keystore import KeyStore, KeyStoreBase
from transcoder.keys.keystore_schema import MIGRATIONS, key_values, migrate
from transcoder.keys.model import KeyFormat, PolicyMode
from transcoder.keys.view_epochs import (
    MAX_ACCOUNT_EPOCH,
    MAX_UIDVALIDITY,
    TooManyViewChanges,
    ViewSettings,
    _inputs_id,
    inputs_id,
    presented_uid_validity,
    usable_material,
    write_server_epoch,
)

ALWAYS, OFF = PolicyMode.ALWAYS, PolicyMode.OFF
SMIME, OPENPGP = KeyFormat.SMIME, KeyFormat.OPENPGP


def epoch(store: KeyStore, account: str = ALICE, now: Any = T0) -> int:
    """The account's view epoch at ``now``."""
    return store.view_epoch(account, now)


def test_new_account_is_at_epoch_zero(store: KeyStore) -> None:
    """An account nobody configured is at epoch 0: its UIDVALIDITY is the Maildir's own."""
    assert epoch(store) == 0
    assert presented_uid_validity(1_700_000_000, 0) == 1_700_000_000


def test_keys_stored_under_mode_off_change_no_view(store: KeyStore) -> None:
    """Under MODE OFF views are the stored messages: storing and retiring keys moves nothing."""
    store.put(ALICE, key("a"), T0)
    store.put(ALICE, key("b"), T0)
    store.retire(ALICE, key("b").fingerprint, T0)
    assert epoch(store) == 0


def test_every_change_of_the_views_moves_the_epoch_once(store: KeyStore) -> None:
    """MODE, FORMAT, a new key, a retired key, a purged key: each moves the epoch by one."""
    store.put(ALICE, key("cert"), T0)
    store.put(ALICE, key("pgp", OPENPGP), T0)
    store.set_policy(ALICE, T0, format=SMIME)
    assert epoch(store) == 0  # still OFF
    store.set_policy(ALICE, T0, mode=ALWAYS)
    assert epoch(store) == 1
    store.set_policy(ALICE, T0, format=OPENPGP)
    assert epoch(store) == 2
    store.put(ALICE, key("pgp-2", OPENPGP), T0)  # supersedes "pgp"
    assert epoch(store) == 3
    store.retire(ALICE, key("pgp-2", OPENPGP).fingerprint, T0)
    assert epoch(store) == 4
    store.put(ALICE, key("pgp-3", OPENPGP), T0)
    store.purge(key("pgp-3", OPENPGP).fingerprint, T0)
    assert epoch(store) == 6
    store.set_policy(ALICE, T0, mode=OFF)
    assert epoch(store) == 7


def test_changes_that_leave_the_views_alone_move_nothing(store: KeyStore) -> None:
    """The same policy again, a key of another format, a retired key retired or purged: no move."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS, format=SMIME)
    store.put(ALICE, key("old"), T0)
    store.put(ALICE, key("cert"), T0)  # "cert" active again, "old" retired
    before = epoch(store)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    store.put(ALICE, key("cert"), later(1))  # the same material stored again
    store.put(ALICE, key("pgp", OPENPGP), T0)  # FORMAT is SMIME: not an input
    store.retire(ALICE, key("old").fingerprint, T0)
    store.purge(key("old").fingerprint, T0)
    assert epoch(store) == before


def test_each_account_counts_its_own(store: KeyStore) -> None:
    """Alice's changes leave Bob's epoch alone."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    assert (epoch(store, ALICE), epoch(store, BOB)) == (1, 0)


def test_refused_change_moves_nothing(store: KeyStore) -> None:
    """MODE ALWAYS refused for want of a key leaves the epoch where it was."""
    with pytest.raises(NoUsableKey):
        store.set_policy(ALICE, T0, mode=ALWAYS)
    assert epoch(store) == 0


def test_change_and_epoch_are_one_transaction(open_store: OpenStore) -> None:
    """An audit hook failing on the views.changed record undoes the policy change too."""

    def audit(record: dict[str, Any]) -> None:
        if record["event"] == "views.changed":
            raise RuntimeError("audit log unavailable")

    with open_store(audit=audit) as store:
        store.put(ALICE, key("cert"), T0)
        with pytest.raises(RuntimeError):
            store.set_policy(ALICE, T0, mode=ALWAYS)
        assert store.get_policy(ALICE, T0).mode is OFF
    with open_store() as store:
        assert epoch(store) == 0


def test_move_is_audited_with_cause_and_origin(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """views.changed names the account, the new epoch, the cause and who asked."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS, origin={"peer": "tcp:192.0.2.1:5"})
    record, change = audit_log[-2:]  # before the change's own record
    assert change["event"] == "policy.changed"
    assert {k: record[k] for k in ("event", "account", "epoch", "cause", "peer")} == {
        "event": "views.changed",
        "account": ALICE,
        "epoch": 1,
        "cause": "policy.changed",
        "peer": "tcp:192.0.2.1:5",
    }


def test_key_expiring_moves_the_epoch_when_next_read(
    store: KeyStore, audit_log: list[dict[str, Any]]
) -> None:
    """A key that expires changes the views with no write: the first read after counts it, once."""
    store.put(ALICE, key("cert", not_after=later(10)), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    assert epoch(store, now=later(10)) == 1
    assert epoch(store, now=later(11)) == 2
    assert epoch(store, now=later(12)) == 2
    assert audit_log[-1]["cause"] == "drift"


def test_implicit_format_falling_back_moves_the_epoch(store: KeyStore) -> None:
    """FORMAT never set follows the newest key: when it expires, the older format's key serves."""
    store.put(ALICE, key("cert"), T0)
    store.put(ALICE, key("pgp", OPENPGP, not_after=later(10)), later(1))
    store.set_policy(ALICE, later(1), mode=ALWAYS)
    inputs = store.view_inputs(ALICE, later(2))
    assert (inputs.epoch, inputs.policy.format) == (1, OPENPGP)
    inputs = store.view_inputs(ALICE, later(11))
    assert (inputs.epoch, inputs.policy.format) == (2, SMIME)


def test_view_inputs_are_what_the_epoch_counts(store: KeyStore) -> None:
    """view_inputs returns the epoch with the very policy and keys it was counted with."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    inputs = store.view_inputs(ALICE, T0)
    assert inputs.policy == store.get_policy(ALICE, T0)
    assert list(inputs.keys) == store.list_keys(ALICE, T0)


def test_another_connection_sees_the_move(open_store: OpenStore) -> None:
    """A change made through another connection (transcoder-admin's) is read at once."""
    with open_store() as server, open_store() as admin:
        assert epoch(server) == 0
        admin.put(ALICE, key("cert"), T0)
        admin.set_policy(ALICE, T0, mode=ALWAYS)
        assert epoch(server) == 1


def test_epoch_survives_reopening(open_store: OpenStore) -> None:
    """The epoch is kept in the keystore: a restarted server goes on from it."""
    with open_store() as store:
        store.put(ALICE, key("cert"), T0)
        store.set_policy(ALICE, T0, mode=ALWAYS)
        store.set_policy(ALICE, T0, mode=OFF)
    with open_store() as store:
        assert epoch(store) == 2


def test_upgraded_keystore_announces_transcoded_views_once(tmp_path: Path) -> None:
    """A keystore from before view epochs: an account under MODE ALWAYS moves to epoch 1, once."""
    raw = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    migrate(raw, MIGRATIONS[:1])
    values = key_values(ALICE, key("cert"), T0)
    names = ", ".join(values)
    raw.execute(
        f"INSERT INTO keys ({names}) VALUES ({', '.join('?' * len(values))})", [*values.values()]
    )
    raw.execute(
        "INSERT INTO policies VALUES (?, 'ALWAYS', NULL, '2026-03-01T12:00:00.000000Z')", (ALICE,)
    )
    raw.execute(
        "INSERT INTO policies VALUES (?, 'OFF', NULL, '2026-03-01T12:00:00.000000Z')", (BOB,)
    )
    raw.close()
    with KeyStore(tmp_path / "keys.db") as store:
        assert [epoch(store), epoch(store), epoch(store, BOB)] == [1, 1, 0]


def test_changes_past_the_cap_are_refused(store: KeyStore, audit_log: list[dict[str, Any]]) -> None:
    """At MAX_ACCOUNT_EPOCH a change is refused NO [LIMIT] and undone; reading still works."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    with store._transaction() as db:  # as if that many changes had been made
        db.execute("UPDATE view_epochs SET epoch = ?", (MAX_ACCOUNT_EPOCH,))
    with pytest.raises(TooManyViewChanges) as refused:
        store.set_policy(ALICE, T0, mode=OFF)
    assert refused.value.code == "LIMIT"
    assert store.get_policy(ALICE, T0).mode is ALWAYS
    assert epoch(store) == MAX_ACCOUNT_EPOCH
    assert audit_log[-1]["event"] == "views.refused"


CAROL, DAVE = "carol@example.org", "dave@example.org"

#: Server-wide settings, and the same with one part changed.
SETTINGS = ViewSettings(
    common="secret a",
    formats=(("OPENPGP", "pgpmime"), ("SMIME", "smime aes256-cbc")),
    signing=(("OPENPGP", "p1"), ("SMIME", "s1")),
)
CHANGES = {
    "secret": dataclasses.replace(SETTINGS, common="secret b"),
    "cipher": dataclasses.replace(
        SETTINGS, formats=(("OPENPGP", "pgpmime"), ("SMIME", "smime gcm"))
    ),
    "smime signing key": dataclasses.replace(
        SETTINGS, signing=(("OPENPGP", "p1"), ("SMIME", "s2"))
    ),
    "sign-views default": dataclasses.replace(SETTINGS, sign_default=True),
}
#: Which of Alice (S/MIME), Bob (OFF), Carol (OpenPGP), Dave (S/MIME, SIGN ON) each moves.
MOVED = {
    "secret": {ALICE, CAROL, DAVE},
    "cipher": {ALICE, DAVE},
    "smime signing key": {DAVE},
    "sign-views default": {ALICE, CAROL},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_server_settings_move_the_accounts_they_apply_to(store: KeyStore, change: str) -> None:
    """A changed server setting moves the epoch, by one, of each account whose views it
    changes -- a MODE OFF account's never -- and the server-wide epoch stays."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    store.put(CAROL, key("pgp", OPENPGP), T0)
    store.set_policy(CAROL, T0, mode=ALWAYS)
    store.put(DAVE, key("dave"), T0)
    store.set_policy(DAVE, T0, mode=ALWAYS, sign=True)
    accounts = (ALICE, BOB, CAROL, DAVE)
    assert store.note_server_views(SETTINGS, T0) == 0
    before = {account: epoch(store, account) for account in accounts}
    assert store.note_server_views(SETTINGS, T0) == 0
    assert {account: epoch(store, account) for account in accounts} == before
    assert store.note_server_views(CHANGES[change], T0) == 0
    after = {account: epoch(store, account) for account in accounts}
    assert after == {a: before[a] + (a in MOVED[change]) for a in accounts}
    assert {account: epoch(store, account) for account in accounts} == after  # once


def test_a_tool_counts_with_the_settings_a_server_recorded(
    open_store: OpenStore, audit_log: list[dict[str, Any]]
) -> None:
    """transcoder-admin (a keystore without settings of its own) counts a change with the
    settings the server recorded, so the server does not move the epoch a second time; the
    record names what changed."""
    server = open_store(audit=audit_log.append)
    tool = open_store()
    server.put(ALICE, key("cert"), T0)
    server.set_policy(ALICE, T0, mode=ALWAYS)
    server.note_server_views(SETTINGS, T0)
    moved = epoch(server)
    assert epoch(tool) == moved
    server.note_server_views(CHANGES["cipher"], T0)
    assert audit_log[-1]["event"] == "views.settings"
    assert audit_log[-1]["changed"] == ["formats SMIME"]
    tool.put(ALICE, key("cert-2"), T0)
    assert epoch(tool) == epoch(server) == moved + 1


def test_a_server_wide_epoch_of_before_is_still_added(store: KeyStore) -> None:
    """A keystore whose server-wide epoch moved before settings were counted per account
    keeps adding it: no account presents a value it presented before."""
    with store._transaction() as db:
        write_server_epoch(db, 5, "0123456789abcdef0123456789abcdef", T0)
    assert epoch(store, BOB) == 5
    store.note_server_views(SETTINGS, T0)
    assert epoch(store, BOB) == 5
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    assert epoch(store) == 6


@pytest.mark.parametrize("unchanged", [True, False])
def test_a_keystore_of_an_earlier_build_is_carried_over(
    store: KeyStore, audit_log: list[dict[str, Any]], unchanged: bool
) -> None:
    """A keystore an earlier build wrote (inputs counted without settings, one server-wide
    id): when the server's settings are those the id stands for, every account whose
    inputs are still its own keeps its epoch -- no resync for the upgrade; otherwise each
    MODE ALWAYS account moves once.  A MODE OFF account never moves."""
    store.put(ALICE, key("cert"), T0)
    store.set_policy(ALICE, T0, mode=ALWAYS)
    store.put(CAROL, key("carol"), T0)
    store.set_policy(CAROL, T0, mode=ALWAYS)
    with store._transaction() as db:  # as the earlier build recorded them
        for account in (ALICE, CAROL):
            policy = store._policy(db, account, T0)
            earlier = _inputs_id(policy, usable_material(db, account, policy, T0), None)
            db.execute("UPDATE view_epochs SET inputs = ? WHERE account = ?", (earlier, account))
        write_server_epoch(db, 3, "0123456789abcdef0123456789abcdef", T0)
    store.put(CAROL, key("carol-2"), T0)  # counted anew (moves): no longer as recorded then
    with store._transaction() as db:  # back to epoch 1, as if that change had not moved it
        db.execute("UPDATE view_epochs SET epoch = 1 WHERE account = ?", (CAROL,))
    legacy = "0123456789abcdef0123456789abcdef" if unchanged else "another server-wide id"
    store.note_server_views(SETTINGS, T0, legacy=legacy)
    assert epoch(store, ALICE) == (1 + 3 if unchanged else 2 + 3)
    assert epoch(store, CAROL) == 2 + 3  # its inputs were not the recorded ones
    assert epoch(store, BOB) == 3
    (noted,) = [record for record in audit_log if record["event"] == "views.settings"]
    assert noted.get("carried") == (1 if unchanged else None)


def test_settings_read_back_as_recorded() -> None:
    """to_text and from_text round-trip; an older record or none reads as empty settings."""
    for settings in (SETTINGS, *CHANGES.values(), ViewSettings()):
        assert ViewSettings.from_text(settings.to_text()) == settings
    assert ViewSettings.from_text("0123456789abcdef") == ViewSettings()
    assert ViewSettings.from_text(None) == ViewSettings()


def test_inputs_id_ignores_what_views_do_not_depend_on() -> None:
    """MODE OFF ignores keys; a key's expiry or addresses alone do not count, its material does."""
    from transcoder.keys.model import KeyStatus, Policy, StoredKey

    def stored(name: str, **changes: Any) -> StoredKey:
        base = key(name)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        fields.update(account=ALICE, status=KeyStatus.ACTIVE, created_at=T0, activated_at=T0)
        fields.update(changes)
        return StoredKey(**fields)

    always = Policy(ALWAYS, SMIME, format_is_explicit=True)
    assert inputs_id(Policy(), [stored("a")], T0) == inputs_id(Policy(), [], T0) == "OFF"
    same = inputs_id(always, [stored("a")], T0)
    assert inputs_id(always, [stored("a", not_after=later(99), addresses=("x@y",))], T0) == same
    assert inputs_id(always, [stored("a", material=b"other")], T0) != same
    assert inputs_id(always, [], T0) != same


@given(
    st.integers(1, MAX_UIDVALIDITY - 2**25),
    st.integers(0, MAX_ACCOUNT_EPOCH),
    st.integers(0, 2**20),
    st.integers(0, 2**20),
)
def test_presented_value_grows_with_either_input(
    stored: int, epoch_: int, more_stored: int, more_epoch: int
) -> None:
    """presented(stored, epoch) grows strictly when either grows: no mailbox repeats a value."""
    before = presented_uid_validity(stored, epoch_)
    after = presented_uid_validity(stored + more_stored, epoch_ + more_epoch)
    assert 1 <= before <= MAX_UIDVALIDITY
    assert after > before or (more_stored, more_epoch) == (0, 0)


def test_presented_value_stays_a_32_bit_nz_number() -> None:
    """Past 2^32-1 the value wraps to 1 (RFC 3501 nz-number), as the store's own counter does."""
    assert presented_uid_validity(MAX_UIDVALIDITY, 0) == MAX_UIDVALIDITY
    assert presented_uid_validity(MAX_UIDVALIDITY, 1) == 1
    assert presented_uid_validity(MAX_UIDVALIDITY - 1, 1) == MAX_UIDVALIDITY
    with pytest.raises(ValueError):
        presented_uid_validity(0, 1)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["c1", "c2", "p1", "p2"])),
        st.tuples(st.just("retire"), st.sampled_from(["c1", "c2", "p1", "p2"])),
        st.tuples(st.just("mode"), st.sampled_from([ALWAYS, OFF])),
        st.tuples(st.just("format"), st.sampled_from([SMIME, OPENPGP])),
        st.tuples(st.just("wait"), st.integers(1, 40)),
    ),
    max_size=25,
)


_PG_DATABASES: dict[str, str] = {}


def _fresh_store(engine_name: str, tmp_path_factory: Any, postgresql: Any) -> KeyStoreBase:
    """An empty keystore of ``engine_name`` (PostgreSQL: one database, emptied per example)."""
    if engine_name == "sqlite":
        return KeyStore(tmp_path_factory.mktemp("epochs") / "keys.db")
    from transcoder.keys.pg_keystore import PgKeyStore

    if "dsn" not in _PG_DATABASES:
        _PG_DATABASES["dsn"] = postgresql.new_database()
    store = PgKeyStore(_PG_DATABASES["dsn"])
    with store._transaction() as db:
        db.execute("TRUNCATE keys, policies, view_epochs, server_views, audit")
    return store


@given(ops=OPERATIONS)
def test_an_epoch_always_stands_for_one_set_of_inputs(
    tmp_path_factory: Any, ops: list[Any]
) -> None:
    """Over any sequence of changes and expiries, epochs only grow and each names one view."""
    check_epochs(_fresh_store("sqlite", tmp_path_factory, None), ops)


@given(ops=OPERATIONS)
def test_an_epoch_always_stands_for_one_set_of_inputs_on_postgresql(
    tmp_path_factory: Any, postgresql: Any, ops: list[Any]
) -> None:
    """The same on PostgreSQL (one database, emptied before each example)."""
    check_epochs(_fresh_store("postgresql", tmp_path_factory, postgresql), ops)


def check_epochs(opened: KeyStoreBase, ops: list[Any]) -> None:
    """Run ``ops`` on ``opened``; epochs only grow and each names one set of inputs."""
    seen: dict[int, str] = {}
    last, now = 0, T0
    with opened as store:
        for op, arg in ops:
            try:
                if op == "put":
                    fmt = SMIME if arg.startswith("c") else OPENPGP
                    store.put(ALICE, key(arg, fmt, not_after=T0 + timedelta(minutes=60)), now)
                elif op == "retire":
                    fmt = SMIME if arg.startswith("c") else OPENPGP
                    store.retire(ALICE, key(arg, fmt).fingerprint, now)
                elif op == "mode":
                    store.set_policy(ALICE, now, mode=arg)
                elif op == "format":
                    store.set_policy(ALICE, now, format=arg)
                else:
                    now += timedelta(minutes=arg)
            except NoUsableKey:
                pass
            inputs = store.view_inputs(ALICE, now)
            current = inputs_id(inputs.policy, inputs.keys, now)
            with store._transaction("DEFERRED") as db:
                counted = _inputs_id(
                    inputs.policy, usable_material(db, ALICE, inputs.policy, now), ViewSettings()
                )
            assert counted == current  # the SQL selection is the selection's own
            assert inputs.epoch >= last
            assert seen.setdefault(inputs.epoch, current) == current
            last = inputs.epoch
