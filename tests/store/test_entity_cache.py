"""The store-wide cache of parsed MIME trees: bounded by weight, shared, dropped on expunge."""

from __future__ import annotations

import io

from twisted.mail.imap4 import MessageSet

from tests.store.helpers import append, message
from transcoder.mime.entity import parse_message
from transcoder.store import MaildirAccount, MaildirStore
from transcoder.store.entity_cache import PART_COST, EntityCache, weight


def test_weight_counts_every_part_and_its_header() -> None:
    """One part: its cost plus twice its header octets; a multipart adds each child's."""
    plain = parse_message(io.BytesIO(message("w")))
    assert weight(plain) == PART_COST + 2 * plain.header_size
    multi = parse_message(
        io.BytesIO(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n"
        )
    )
    assert len(multi.children) == 2
    assert weight(multi) == 3 * PART_COST + 2 * sum(e.header_size for e in (multi, *multi.children))


def test_least_recently_used_goes_first_past_the_budget() -> None:
    """Past the budget the oldest unused entry is dropped; a read makes an entry recent."""
    entity = parse_message(io.BytesIO(message("lru")))
    cache = EntityCache(budget=3 * weight(entity))
    owner = cache.new_owner()
    for uid in (1, 2, 3):
        cache.put(owner, uid, entity)
    assert cache.get(owner, 1) is entity  # 1 is now the most recent
    cache.put(owner, 4, entity)
    assert cache.get(owner, 2) is None
    assert [cache.get(owner, uid) is entity for uid in (1, 3, 4)] == [True, True, True]
    assert cache.used == 3 * weight(entity)


def test_an_entity_over_the_budget_is_not_kept() -> None:
    """A tree heavier than the whole budget is parsed each time rather than evicting all."""
    entity = parse_message(io.BytesIO(message("big")))
    cache = EntityCache(budget=weight(entity) - 1)
    owner = cache.new_owner()
    cache.put(owner, 1, entity)
    assert cache.get(owner, 1) is None and cache.used == 0


def test_mailboxes_share_the_store_cache_and_expunge_drops(
    store: MaildirStore, account: MaildirAccount
) -> None:
    """Two mailboxes' messages live in one cache, apart; an expunged message leaves it."""
    account.create("Work")
    append(account, message("inbox"))
    append(account, message("work"), mailbox="Work")
    inbox, work = account.select("INBOX"), account.select("Work")
    assert inbox is not None and work is not None
    ((_, a),) = inbox.fetch(MessageSet(1), uid=False)
    ((_, b),) = work.fetch(MessageSet(1), uid=False)
    assert a.getHeaders(False, "subject") == {"subject": "inbox"}
    assert b.getHeaders(False, "subject") == {"subject": "work"}
    assert len(store.entity_cache) == 2
    inbox.store(MessageSet(1), ["\\Deleted"], 1, uid=False)
    assert inbox.expunge() == [1]
    assert len(store.entity_cache) == 1
    assert work.state.cached_entity(1) is not None
