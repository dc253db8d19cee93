"""The account: CREATE/DELETE/RENAME semantics, LIST/LSUB, subscriptions (RFC 3501 section 6.3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.mail.imap4 import MessageSet

from tests.store.helpers import ADDRESS, append, make_store, message
from transcoder.errors import (
    InvalidMailboxName,
    MailboxError,
    MailboxExists,
    MailboxNotFound,
)
from transcoder.store import MaildirAccount, MaildirStore


def listing(account: MaildirAccount, ref: str = "", pattern: str = "*") -> dict[str, list[str]]:
    return {name: info.getFlags() for name, info in account.listMailboxes(ref, pattern)}


def test_create_makes_missing_parents(account: MaildirAccount, store: MaildirStore) -> None:
    """CREATE a/b/c also creates a and a/b as selectable mailboxes (RFC 3501 6.3.3)."""
    assert account.create("a/b/c") is True
    assert account.mailbox_names() == ["INBOX", "a", "a/b", "a/b/c"]
    assert (store.root / ADDRESS / ".a.b.c" / "cur").is_dir()
    assert account.select("a/b") is not None


def test_create_trailing_delimiter_and_existing(account: MaildirAccount) -> None:
    """A trailing '/' only declares intent; creating an existing mailbox or INBOX is refused."""
    account.create("Projects/")
    assert "Projects" in account.mailbox_names()
    with pytest.raises(MailboxExists):
        account.create("Projects")
    with pytest.raises(MailboxExists):
        account.create("inbox")


@pytest.mark.parametrize("bad", ["a//b", "/a", "a\x01", "*", "a/%", ""])
def test_create_refuses_invalid_names(account: MaildirAccount, bad: str) -> None:
    """Names with empty levels, control characters or wildcards are refused."""
    with pytest.raises(InvalidMailboxName):
        account.create(bad)


@pytest.mark.parametrize("name", ["!#$&'+,-.", "a.b", "Entwürfe/Ölfässer", "日本語", "~x_y=z"])
def test_any_atom_characters_and_unicode(account: MaildirAccount, name: str) -> None:
    """Names made of atom characters (dots included) and Unicode work end to end."""
    account.create(name)
    assert name in account.mailbox_names()
    uid = append(account, message(), mailbox=name)
    session = account.select(name)
    assert session is not None and session.getUID(1) == uid
    assert listing(account, "", name) == {name: ["\\HasNoChildren"]}


def test_dot_names_do_not_collide_with_hierarchy(account: MaildirAccount) -> None:
    """'a.b' and 'a/b' are different mailboxes; neither makes the other appear."""
    account.create("a.b")
    assert account.select("a/b") is None
    account.create("a/b")
    assert sorted(account.mailbox_names()) == sorted(["INBOX", "a.b", "a", "a/b"])


def test_select_missing_or_noselect(account: MaildirAccount) -> None:
    """select() returns None for a missing, invalid or \\Noselect mailbox; INBOX any case."""
    assert account.select("nope") is None
    assert account.select("a//b") is None
    assert account.select("iNbOx") is not None
    account.create("p/c")
    account.delete("p")
    assert account.select("p") is None


def test_delete_leaf(account: MaildirAccount, store: MaildirStore) -> None:
    """DELETE of a mailbox without inferiors removes it and its messages."""
    account.create("Trash")
    append(account, message(), mailbox="Trash")
    assert account.delete("Trash") is True
    assert "Trash" not in account.mailbox_names()
    entries = os.listdir(store.root / ADDRESS)
    assert ".Trash" not in entries and not any(e.startswith("..") for e in entries)
    with pytest.raises(MailboxNotFound):
        account.delete("Trash")


def test_delete_with_inferiors_leaves_noselect(account: MaildirAccount) -> None:
    """DELETE of a mailbox with inferiors empties it and leaves it \\Noselect; again is NO."""
    account.create("p/c")
    append(account, message(), mailbox="p")
    account.delete("p")
    assert listing(account) == {
        "INBOX": ["\\HasNoChildren"],
        "p": ["\\Noselect", "\\HasChildren"],
        "p/c": ["\\HasNoChildren"],
    }
    with pytest.raises(MailboxError):
        account.delete("p")
    account.delete("p/c")
    assert listing(account, "", "p") == {"p": ["\\Noselect", "\\HasNoChildren"]}
    account.delete("p")  # a \Noselect leaf can go
    assert listing(account, "", "p") == {}


def test_recreate_noselect(account: MaildirAccount) -> None:
    """CREATE of a \\Noselect name makes it selectable again."""
    account.create("p/c")
    account.delete("p")
    account.create("p")
    assert account.select("p") is not None


def test_delete_inbox_refused(account: MaildirAccount) -> None:
    """INBOX cannot be deleted."""
    with pytest.raises(MailboxError):
        account.delete("INBOX")


def test_delete_reaches_open_sessions(account: MaildirAccount) -> None:
    """Sessions on a deleted mailbox see every message expunged."""
    account.create("Old")
    append(account, message(), mailbox="Old")
    session = account.select("Old")
    assert session is not None
    account.delete("Old")
    assert session.poll().expunged == (1,)


def test_deleted_then_recreated_gets_new_uidvalidity(account: MaildirAccount) -> None:
    """A mailbox deleted and created again (same second) gets a different UIDVALIDITY."""
    account.create("Box")
    first = account.select("Box")
    assert first is not None
    validity = first.getUIDValidity()
    account.delete("Box")
    account.create("Box")
    second = account.select("Box")
    assert second is not None and second.getUIDValidity() > validity


def test_rename_moves_inferiors(account: MaildirAccount) -> None:
    """RENAME a -> x/y moves a's inferiors along, creates x, and keeps messages and UIDs."""
    account.create("a/b")
    append(account, message(), mailbox="a/b")
    account.rename("a", "x/y")
    assert sorted(account.mailbox_names()) == ["INBOX", "x", "x/y", "x/y/b"]
    session = account.select("x/y/b")
    assert session is not None and list(session.uids) == [1]


def test_rename_errors(account: MaildirAccount) -> None:
    """RENAME refuses a missing source, an existing target or INBOX, and moving into itself."""
    account.create("a")
    account.create("b/c")
    with pytest.raises(MailboxNotFound):
        account.rename("zzz", "q")
    with pytest.raises(MailboxExists):
        account.rename("a", "b")
    with pytest.raises(MailboxExists):
        account.rename("a", "INBOX")
    with pytest.raises(MailboxError):
        account.rename("a", "a/child")


def test_rename_keeps_open_sessions(account: MaildirAccount) -> None:
    """A session open on a renamed mailbox follows it to its new name."""
    account.create("Old")
    session = account.select("Old")
    assert session is not None
    account.rename("Old", "New")
    assert session.name == "New"
    append(account, message(), mailbox="New")
    assert session.poll().exists == 1


def test_rename_inbox(account: MaildirAccount, store: MaildirStore) -> None:
    """RENAME INBOX moves its messages (order, flags kept) to a new mailbox; INBOX stays, empty."""
    account.create("INBOX/kept")
    for i in range(3):
        append(account, message(f"m{i}"))
    inbox = account.select("INBOX")
    assert inbox is not None
    inbox.store(MessageSet(2), ["\\Flagged", "Work"], 1, uid=True)
    account.rename("INBOX", "Old Mail")
    assert inbox.poll().expunged == (3, 2, 1)
    moved = account.select("Old Mail")
    assert moved is not None and list(moved.uids) == [1, 2, 3]
    assert {"\\Flagged", "Work"} <= set(moved.fetch(MessageSet(2), uid=True)[0][1].flags)
    assert account.select("INBOX/kept") is not None
    assert append(account, message("after")) == 4  # INBOX's UIDs are not reused


def test_listing_attributes(account: MaildirAccount) -> None:
    """LIST reports mailbox attributes only: \\HasChildren / \\HasNoChildren / \\Noselect."""
    account.create("a/b")
    account.create("z")
    assert listing(account) == {
        "INBOX": ["\\HasNoChildren"],
        "a": ["\\HasChildren"],
        "a/b": ["\\HasNoChildren"],
        "z": ["\\HasNoChildren"],
    }
    assert listing(account, "", "%") == {
        "INBOX": ["\\HasNoChildren"],
        "a": ["\\HasChildren"],
        "z": ["\\HasNoChildren"],
    }
    assert list(listing(account, "a/", "%")) == ["a/b"]
    assert list(listing(account, "", "a/%")) == ["a/b"]


def test_list_anchored(account: MaildirAccount) -> None:
    """Pattern 'a' matches only 'a', not 'ab' (anchored at the end)."""
    account.create("a")
    account.create("ab")
    assert list(listing(account, "", "a")) == ["a"]


def test_list_empty_pattern_gives_root(account: MaildirAccount) -> None:
    """LIST "" "" answers the root name "" with \\Noselect and the delimiter."""
    ((name, info),) = account.listMailboxes("", "")
    assert (name, info.getFlags(), info.getHierarchicalDelimiter()) == ("", ["\\Noselect"], "/")


def test_list_shows_implied_parents(account: MaildirAccount, store: MaildirStore) -> None:
    """A hierarchy gap left by another tool (.x.y without .x) lists x as \\Noselect."""
    for sub in ("cur", "new", "tmp"):
        (store.root / ADDRESS / ".x.y" / sub).mkdir(parents=True)
    assert listing(account, "", "%")["x"] == ["\\Noselect", "\\HasChildren"]


def test_subscriptions(tmp_path: Path, clock: Clock, account: MaildirAccount) -> None:
    """SUBSCRIBE/UNSUBSCRIBE persist in the subscriptions file, one name per line."""
    account.create("Entwürfe")
    account.subscribe("Entwürfe")
    account.subscribe("INBOX")
    account.subscribe("Entwürfe")
    assert account.isSubscribed("Entwürfe") and account.isSubscribed("inbox")
    text = (account.root / "subscriptions").read_text()
    assert text == "Entw&APw-rfe\nINBOX\n"
    again = make_store(tmp_path / "mail", clock).account(ADDRESS)
    assert again.isSubscribed("Entwürfe")
    again.unsubscribe("Entwürfe")
    assert not account.isSubscribed("Entwürfe")
    with pytest.raises(MailboxError):
        again.unsubscribe("Entwürfe")


def test_subscription_survives_delete(account: MaildirAccount) -> None:
    """Deleting a mailbox does not unsubscribe it (RFC 3501 6.3.6)."""
    account.create("gone")
    account.subscribe("gone")
    account.delete("gone")
    assert account.isSubscribed("gone")


def test_lsub_with_percent_shows_unsubscribed_parent(account: MaildirAccount) -> None:
    """LSUB "" "%" lists an unsubscribed parent of a subscribed child as \\Noselect."""
    account.create("p/c")
    account.subscribe("p/c")
    assert [(n, i.getFlags()) for n, i in account.list_subscribed("", "%")] == [
        ("p", ["\\Noselect"])
    ]
    assert [n for n, _ in account.list_subscribed("", "*")] == ["p/c"]


def test_namespaces(account: MaildirAccount) -> None:
    """NAMESPACE: one personal namespace "" with "/"; no shared or other users'."""
    assert account.getPersonalNamespaces() == [["", "/"]]
    assert account.getSharedNamespaces() is None
    assert account.getUserNamespaces() is None
    assert account.getOtherNamespaces() is None
