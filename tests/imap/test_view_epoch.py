"""A view that changes is announced (issue 9): new UIDVALIDITY values, and BYE for stale sessions.

Real keystore (SQLite in tmp_path), real Maildir, real certificates and
OpenPGP keys; the keystore's thread pool is replaced by running each call
at once (``InlineKeyStore``) or when the test says (``HeldKeyStore``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from tests.imap.harness import Session, make_session
from tests.imap.test_xkey import HeldKeyStore, InlineKeyStore, key_clock
from tests.keyfactory import PgpKeys
from tests.keys.certs import NOW
from tests.transcoders.smime_keys import identity
from transcoder.cms.settings import CmsSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.imap.view_epoch import (
    BYE,
    ServerViewsService,
    legacy_views_id,
    server_view_settings,
)
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.async_store import AsyncKeyStore
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import PolicyMode
from transcoder.keys.view_epochs import _inputs_id, usable_material, write_server_epoch
from transcoder.signing.signers import ServerSigning
from transcoder.transcoders.derivation import ViewSecret
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

ALICE = "alice@example.org"
MESSAGE = b"From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


class UncachedHeldKeyStore(HeldKeyStore):
    """A held pool without the data-version shortcut: every epoch check is a held read."""

    def data_version(self) -> int | None:
        """Unknown: the last epoch read is never reused."""
        return None


class CountingKeyStore(InlineKeyStore):
    """An inline pool that counts the epoch checks that went to the keystore."""

    reads = 0

    def view_inputs(self, account: str, now: Any, with_keys: bool = True) -> Any:
        """Count, then read."""
        self.reads += not with_keys
        return super().view_inputs(account, now, with_keys)


def release(session: Session) -> bytes:
    """Let the oldest held keystore call finish; what the server wrote by the next turn."""
    session.server.keys.store.release()
    session.clock.advance(0)  # a command that ended lets the next one in on the next turn
    return session.output()


@pytest.fixture
def keystore(tmp_path: Path) -> Any:
    """The keystore file the sessions of a test share."""
    with KeyStore(tmp_path / "keys.db") as store:
        yield store


def connect(
    tmp_path: Path,
    store: KeyStore,
    pool: type[AsyncKeyStore] = InlineKeyStore,
    address: str = ALICE,
) -> Session:
    """A logged-in session of ``address`` whose server has a key layer on ``store``."""
    session = make_session(tmp_path, address=address)
    clock = key_clock()
    session.server.keys = KeyAccess(pool(store, clock, ThreadPool()), clock)
    if issubclass(pool, HeldKeyStore):
        session.server.keys.store.held = []  # type: ignore[attr-defined]
    return session


def ok(session: Session, line: bytes) -> list[bytes]:
    """Run ``line``; it must succeed; its untagged responses."""
    untagged, done = session.command(line)
    assert b" OK " in done, (line, untagged, done)
    return untagged


def uidvalidity(lines: list[bytes]) -> int:
    """The UIDVALIDITY in SELECT's ``* OK [UIDVALIDITY n]``."""
    for line in lines:
        match = re.match(rb"\* OK \[UIDVALIDITY (\d+)\] ", line)
        if match:
            return int(match.group(1))
    raise AssertionError(lines)


def select(session: Session, name: bytes = b"INBOX", command: bytes = b"SELECT") -> int:
    """SELECT (or EXAMINE) ``name``; the UIDVALIDITY presented."""
    return uidvalidity(ok(session, command + b" " + name))


def put(session: Session, material: bytes) -> None:
    """XKEY PUT ``material`` with a non-synchronizing literal; it must succeed."""
    session.send(b"p XKEY PUT {%d+}\r\n" % len(material) + material + b"\r\n")
    out = session.output()
    assert b"p OK XKEY PUT completed" in out, out


def ended(session: Session, line: bytes) -> None:
    """``line`` is not run: the answer is the view BYE, and the connection closes."""
    session.send(b"z " + line + b"\r\n")
    assert session.output() == b"* " + BYE + b"\r\n"
    assert session.transport.disconnecting


class Seen:
    """Every UIDVALIDITY presented for one mailbox, checked as each arrives."""

    def __init__(self, first: int) -> None:
        self.values = [first]

    def same(self, value: int) -> None:
        """Nothing changed the views: the value is the last one."""
        assert value == self.values[-1], self.values

    def new(self, value: int) -> None:
        """The views changed: a value never presented before, greater than all of them."""
        assert value not in self.values and value > max(self.values), (value, self.values)
        self.values.append(value)


def test_each_change_of_the_views_presents_a_new_uidvalidity(
    tmp_path: Path, keystore: KeyStore, pgp_keys: PgpKeys
) -> None:
    """XKEY PUT, FORMAT, MODE, DELETE, a restart, a recreated mailbox: never a value seen before."""
    alice = connect(tmp_path, keystore)
    ok(alice, b"CREATE Box")
    inbox, box = Seen(select(alice)), Seen(select(alice, b"Box"))
    ok(alice, b"UNSELECT")
    put(alice, identity("p256").cert_der)  # MODE OFF: no view changes
    ok(alice, b"XKEY POLICY FORMAT SMIME")
    put(alice, pgp_keys.alice_25519)  # not of the FORMAT: no view changes either
    inbox.same(select(alice, command=b"EXAMINE"))
    for change in (
        lambda: ok(alice, b"XKEY POLICY MODE ALWAYS"),
        lambda: put(alice, identity("rsa2048").cert_der),  # supersedes the P-256 one
        lambda: ok(alice, b"XKEY POLICY FORMAT OPENPGP"),
        lambda: ok(alice, b"XKEY DELETE " + pgp_keys.alice_25519_fpr.encode()),
        lambda: ok(alice, b"XKEY POLICY FORMAT SMIME"),
        lambda: ok(alice, b"XKEY POLICY MODE OFF"),
        lambda: ok(alice, b"XKEY POLICY MODE ALWAYS"),
    ):
        ok(alice, b"UNSELECT")
        change()
        inbox.new(select(alice))
        box.new(select(alice, b"Box"))
    ok(alice, b"UNSELECT")
    with KeyStore(tmp_path / "keys.db") as reopened:  # the server restarted
        again = connect(tmp_path, reopened)
        inbox.same(select(again))
        ok(again, b"UNSELECT")
        ok(again, b"DELETE Box")
        ok(again, b"CREATE Box")  # a new Maildir UIDVALIDITY, same epoch
        box.new(select(again, b"Box"))
        ok(again, b"UNSELECT")
        ok(again, b"XKEY POLICY MODE OFF")
        inbox.new(select(again))
        box.new(select(again, b"Box"))


def test_changes_that_alter_no_view_keep_the_uidvalidity(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """Keys stored under MODE OFF, the policy set to what it is: clients keep their copies."""
    alice = connect(tmp_path, keystore)
    before = select(alice)
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE OFF")
    ok(alice, b"NOOP")  # not ended: nothing changed
    assert select(alice) == before == int(alice.server.mbox.getUIDValidity())


def test_status_appenduid_and_copyuid_name_the_presented_value(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """STATUS, APPENDUID, COPYUID and MOVE's COPYUID give the UIDVALIDITY SELECT presents."""
    alice = connect(tmp_path, keystore)
    ok(alice, b"CREATE Box")
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")

    def status(name: bytes) -> int:
        (line,) = ok(alice, b"STATUS " + name + b" (UIDVALIDITY)")
        return int(re.search(rb"UIDVALIDITY (\d+)", line).group(1))  # type: ignore[union-attr]

    def code(line: bytes, name: bytes) -> int:
        return int(re.search(name + rb" (\d+) ", line).group(1))  # type: ignore[union-attr]

    inbox_status, box_status = status(b"INBOX"), status(b"Box")
    alice.send(b"a APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    appended = code(alice.output(), b"APPENDUID")
    box = select(alice, b"Box")
    inbox = select(alice)
    assert inbox_status == appended == inbox != int(alice.server.mbox.getUIDValidity())
    assert box_status == box and status(b"INBOX") == inbox
    alice.send(b"b APPEND Box {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
    assert code(alice.output(), b"APPENDUID") == box
    _, done = alice.command(b"COPY 1 Box")
    assert code(done, b"COPYUID") == box
    untagged, _ = alice.command(b"MOVE 1 Box")
    assert code(untagged[0], b"COPYUID") == box


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP",
        b"FETCH 1 (BODY.PEEK[])",
        b"UID FETCH 1 (FLAGS)",
        b"SEARCH ALL",
        b"STATUS INBOX (UIDVALIDITY)",
        b"COPY 1 INBOX",
        b"EXPUNGE",
        b"IDLE",
        b'LIST "" *',
    ],
)
def test_another_session_ends_with_bye_at_its_next_command(
    tmp_path: Path, keystore: KeyStore, line: bytes
) -> None:
    """After MODE ALWAYS set in another session, this one's next command gets BYE, not an answer."""
    reader, other = connect(tmp_path, keystore), connect(tmp_path, keystore)
    put(other, identity("p256").cert_der)
    reader.deliver(MESSAGE)
    select(reader)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    ended(reader, line)


def test_a_command_cut_short_changes_nothing(tmp_path: Path, keystore: KeyStore) -> None:
    """The STORE that met the BYE did not run: the message's flags are unchanged."""
    reader, other = connect(tmp_path, keystore), connect(tmp_path, keystore)
    put(other, identity("p256").cert_der)
    reader.deliver(MESSAGE)
    select(reader)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    ended(reader, b"STORE 1 +FLAGS (\\Flagged)")
    (line,) = [ln for ln in ok(other, b"SELECT INBOX") if b"FETCH" in ln] or [b""]
    assert b"\\Flagged" not in line
    assert ok(other, b"SEARCH FLAGGED") == [b"* SEARCH"]


def test_a_change_through_another_keystore_connection_ends_the_session(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """transcoder-admin's change (another connection to keys.db) is seen at the next command."""
    reader = connect(tmp_path, keystore)
    select(reader)
    with KeyStore(tmp_path / "keys.db") as admin:
        admin.put(ALICE, identity("p256").key, NOW)
        admin.set_policy(ALICE, NOW, mode=PolicyMode.ALWAYS)
    ended(reader, b"NOOP")


def test_a_key_that_expires_ends_the_session_and_moves_the_value(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """A key expiring changes the views with nobody writing: BYE, then a new UIDVALIDITY."""
    alice = connect(tmp_path, keystore)
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")
    seen = Seen(select(alice))
    alice.server.keys.clock.advance(timedelta(days=400).total_seconds())  # type: ignore[union-attr]
    ended(alice, b"NOOP")
    again = connect(tmp_path, keystore)
    again.server.keys.clock.advance(timedelta(days=400).total_seconds())  # type: ignore[union-attr]
    seen.new(select(again))


def test_sessions_not_in_a_mailbox_go_on(tmp_path: Path, keystore: KeyStore) -> None:
    """A session in the authenticated state is not ended; its next SELECT shows the new value."""
    idle, other = connect(tmp_path, keystore), connect(tmp_path, keystore)
    before = select(idle)
    ok(idle, b"UNSELECT")
    put(other, identity("p256").cert_der)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    ok(idle, b'LIST "" *')
    assert select(idle) != before


@pytest.mark.parametrize("leave", [b"UNSELECT", b"CLOSE", b"SELECT INBOX", b"EXAMINE INBOX"])
def test_commands_that_leave_the_mailbox_are_answered(
    tmp_path: Path, keystore: KeyStore, leave: bytes
) -> None:
    """UNSELECT, CLOSE, SELECT, EXAMINE after a change are answered; SELECT shows the new value."""
    reader, other = connect(tmp_path, keystore), connect(tmp_path, keystore)
    seen = Seen(select(reader))
    put(other, identity("p256").cert_der)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    untagged = ok(reader, leave)
    if leave.startswith((b"SELECT", b"EXAMINE")):
        seen.new(uidvalidity(untagged))
    else:
        seen.new(select(reader))
    ok(reader, b"NOOP")


def test_logout_after_a_change_is_a_normal_logout(tmp_path: Path, keystore: KeyStore) -> None:
    """LOGOUT is not held: the usual BYE and tagged OK."""
    reader, other = connect(tmp_path, keystore), connect(tmp_path, keystore)
    select(reader)
    put(other, identity("p256").cert_der)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    reader.send(b"z LOGOUT\r\n")
    out = reader.output()
    assert b"z OK" in out and BYE not in out


def test_own_change_in_the_selected_state(tmp_path: Path, keystore: KeyStore) -> None:
    """XKEY in the selected state is answered, more XKEY too; the next mailbox command gets BYE."""
    alice = connect(tmp_path, keystore)
    select(alice)
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")
    ok(alice, b"XKEY POLICY FORMAT SMIME")
    ok(alice, b"CAPABILITY")
    ended(alice, b"NOOP")


def test_without_a_key_layer_the_maildir_value_is_presented(tmp_path: Path) -> None:
    """A server embedded without keys presents the Maildir's UIDVALIDITY and holds nothing."""
    plain = make_session(tmp_path)
    assert select(plain) == int(plain.server.mbox.getUIDValidity())
    ok(plain, b"NOOP")


def test_held_command_and_pipelined_lines_keep_their_order(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """While the epoch is read, later lines wait, a LITERAL+ APPEND's octets included."""
    alice = connect(tmp_path, keystore, UncachedHeldKeyStore)
    held = alice.server.keys.store  # type: ignore[union-attr]
    alice.send(b"s SELECT INBOX\r\n")
    assert b"s OK" in release(alice)
    literal = b"Subject: x\r\n\r\na CRLF\r\nb NOOP\r\n"
    alice.send(
        b"a NOOP\r\nb APPEND INBOX {%d+}\r\n" % len(literal) + literal + b"\r\nc UID SEARCH ALL\r\n"
    )
    assert alice.output() == b""
    assert release(alice).startswith(b"a OK NOOP")  # a's check
    out = release(alice)  # b's check; APPENDUID for the selected mailbox needs no read
    assert b"b OK [APPENDUID " in out, out
    out = release(alice)  # c's check
    assert out.startswith(b"* SEARCH 1\r\n") and b"c OK" in out, out
    assert not held.held
    fresh = connect(tmp_path, keystore)
    select(fresh)
    assert ok(fresh, b"FETCH 1 (BODY.PEEK[])")[0].endswith(b"{%d}" % len(literal))


def test_fetch_finding_a_new_epoch_sends_no_view(tmp_path: Path, keystore: KeyStore) -> None:
    """A change landing between the check and FETCH's read of the keys: BYE, no message octets."""
    alice = connect(tmp_path, keystore, UncachedHeldKeyStore)
    held = alice.server.keys.store  # type: ignore[union-attr]
    registry = TranscoderRegistry([SmimeTranscoder()])
    alice.server.transcoding = TranscodingConfig(
        registry, ViewCache(tmp_path / "views", defer.maybeDeferred)
    )
    alice.deliver(MESSAGE)
    alice.send(b"s SELECT INBOX\r\n")
    held.release()
    assert b"s OK" in alice.output()
    alice.send(b"f FETCH 1 (BODY.PEEK[])\r\n")
    held.release()  # the check: epoch unchanged, FETCH runs and asks for the keys
    assert alice.output() == b"" and len(held.held) == 1
    keystore.put(ALICE, identity("p256").key, NOW)
    keystore.set_policy(ALICE, NOW, mode=PolicyMode.ALWAYS)
    held.release()
    assert alice.output() == b"* " + BYE + b"\r\n"
    assert alice.server.transport.disconnecting


def test_server_wide_view_settings_move_the_accounts_they_apply_to(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """A new view secret, cipher or --obscure-subject, noted at start: SELECT shows new
    values to a MODE ALWAYS account, and the same ones to a MODE OFF account (its view is
    the stored message, which no server setting changes)."""
    cache = ViewCache(tmp_path / "views", defer.maybeDeferred)

    def config(secret: bytes, cipher: str = "aes256-cbc", obscure: bool = False) -> Any:
        registry = TranscoderRegistry([SmimeTranscoder(CmsSettings(cipher=cipher))])
        return TranscodingConfig(registry, cache, obscure, view_secret=ViewSecret(secret))

    configs = [
        config(b"a" * 32),
        config(b"b" * 32),
        config(b"b" * 32, cipher="aes128-gcm"),
        config(b"b" * 32, cipher="aes128-gcm", obscure=True),
    ]
    assert len({server_view_settings(c) for c in configs}) == 4
    assert server_view_settings(config(b"a" * 32)) == server_view_settings(configs[0])
    alice = connect(tmp_path, keystore)
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")
    bob = connect(tmp_path / "bob", keystore, address="bob@example.org")
    seen: dict[str, Seen] = {}
    for each in [configs[0], configs[0], *configs[1:]]:
        ServerViewsService(alice.server.keys, each).startService()
        for name, session in (("alice", alice), ("bob", bob)):
            value = select(session)
            ok(session, b"UNSELECT")
            if name not in seen:
                seen[name] = Seen(value)
            elif each is configs[0] or name == "bob":
                seen[name].same(value)
            else:
                seen[name].new(value)
    assert len(set(seen["alice"].values)) == 4 and len(set(seen["bob"].values)) == 1


def test_the_id_earlier_builds_recorded_is_reproduced(tmp_path: Path) -> None:
    """legacy_views_id gives what a build before per-account settings recorded for the same
    settings -- the values below are those of commit ad03085's server_views_id --, so its
    keystore is carried over without a resync; other settings give other ids."""
    cache = ViewCache(tmp_path / "views", defer.maybeDeferred)
    registry = TranscoderRegistry([SmimeTranscoder(CmsSettings(cipher="aes128-gcm"))])
    config = TranscodingConfig(registry, cache, True, view_secret=ViewSecret(b"a" * 32))
    assert legacy_views_id(config) == "62d50629285729112510d980b71d9d05"
    assert legacy_views_id(config, ServerSigning(None, True)) == "7279b8130c9f5fb8798c8312e08e8a3a"
    other = TranscodingConfig(registry, cache, False, view_secret=ViewSecret(b"a" * 32))
    assert legacy_views_id(other) != legacy_views_id(config)


def test_a_server_started_on_an_earlier_builds_keystore_presents_the_same_values(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """ServerViewsService hands the keystore the id an earlier build recorded for these
    settings: the account recorded by that build keeps its epoch, so SELECT presents the
    value it presented before the upgrade."""
    cache = ViewCache(tmp_path / "views", defer.maybeDeferred)
    registry = TranscoderRegistry([SmimeTranscoder()])
    config = TranscodingConfig(registry, cache, False, view_secret=ViewSecret(b"a" * 32))
    alice = connect(tmp_path, keystore)
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")
    with keystore._transaction() as db:  # as the earlier build left it, at epoch 1 + 4
        policy = keystore._policy(db, ALICE, NOW)
        earlier = _inputs_id(policy, usable_material(db, ALICE, policy, NOW), None)
        db.execute("UPDATE view_epochs SET epoch = 1, inputs = ?", (earlier,))
        write_server_epoch(db, 4, legacy_views_id(config), NOW)
    stored = keystore.view_epoch  # the value before the upgrade: stored UIDVALIDITY + 5
    ServerViewsService(alice.server.keys, config).startService()
    assert stored(ALICE, NOW) == 5
    before = select(alice)
    ok(alice, b"UNSELECT")
    ServerViewsService(alice.server.keys, config).startService()  # a restart: nothing moves
    assert select(alice) == before


def test_epoch_is_read_again_only_after_a_commit_or_an_expiry(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """No keystore read per command while keys.db is unchanged; one after any commit or expiry."""
    alice = connect(tmp_path, keystore, CountingKeyStore)
    counting = alice.server.keys.store  # type: ignore[union-attr]
    put(alice, identity("p256").cert_der)
    ok(alice, b"XKEY POLICY MODE ALWAYS")
    select(alice)
    before = counting.reads
    for _ in range(5):
        ok(alice, b"NOOP")
    assert counting.reads == before  # nothing changed: the epoch read at SELECT stands
    keystore.put("bob@example.org", identity("p384").key, NOW)  # another account's commit
    ok(alice, b"NOOP")
    ok(alice, b"NOOP")
    assert counting.reads == before + 1
    alice.server.keys.clock.advance(timedelta(days=400).total_seconds())  # type: ignore[union-attr]
    ended(alice, b"NOOP")  # the key expired: read again, and the epoch moved
    assert counting.reads == before + 2


def test_a_held_command_that_fails_is_still_answered(tmp_path: Path, keystore: KeyStore) -> None:
    """A command whose handler raises after its epoch check gets its tagged BAD, not silence."""
    alice = connect(tmp_path, keystore, UncachedHeldKeyStore)

    def run(line: bytes) -> bytes:
        alice.send(line + b"\r\n")
        return release(alice)

    alice.deliver(MESSAGE)
    assert b"s OK" in run(b"s SELECT INBOX")
    assert run(b"b UID EXPUNGE x").startswith(b"b BAD ")  # raises after the check
    assert b"n OK" in run(b"n NOOP")


def test_uid_command_with_a_literal_waits_for_its_check_whole(
    tmp_path: Path, keystore: KeyStore
) -> None:
    """UID SEARCH's LITERAL+ octets are read as its argument while its epoch is read."""
    alice = connect(tmp_path, keystore, UncachedHeldKeyStore)
    alice.deliver(MESSAGE)
    alice.send(b"s SELECT INBOX\r\n")
    assert b"s OK" in release(alice)
    alice.send(b"u UID SEARCH HEADER Subject {2+}\r\nhi\r\nn NOOP\r\n")
    out = release(alice)  # u's check
    assert out.startswith(b"* SEARCH 1\r\nu OK"), out
    assert b"n OK" in release(alice)  # n's check: the literal was not taken for a command


def test_uid_expunge_is_checked_like_the_other_commands(tmp_path: Path, keystore: KeyStore) -> None:
    """UID EXPUNGE of a session whose views changed is not run: the session ends with BYE."""
    alice = connect(tmp_path, keystore)
    alice.deliver(MESSAGE)
    select(alice)
    ok(alice, b"STORE 1 +FLAGS (\\Deleted)")
    other = connect(tmp_path, keystore)
    put(other, identity("rsa2048").cert_der)
    ok(other, b"XKEY POLICY MODE ALWAYS")
    ended(alice, b"UID EXPUNGE 1")
    fresh = connect(tmp_path, keystore)
    select(fresh)
    assert ok(fresh, b"UID SEARCH DELETED") == [b"* SEARCH 1"]
