"""Helpers for the Maildir store tests: synchronous executor, messages, external delivery."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from transcoder.store import MaildirAccount, MaildirStore

#: A fixed "now" for UIDVALIDITY and file names (2023-11-14T22:13:20Z).
NOW = 1_700_000_000.0
ADDRESS = "alice@example.org"


def run_now(f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """Run blocking work synchronously: the injected executor for unit tests."""
    return defer.maybeDeferred(f, *args)


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result of an already-fired Deferred; re-raises its failure."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    outcome = results[0]
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()
    return outcome


def message(subject: str = "hello", body: str = "Hi there.\r\n", eol: str = "\r\n") -> bytes:
    """A small RFC 5322 message with line ends ``eol``."""
    lines = [
        "From: Bob <bob@example.org>",
        "To: Alice <alice@example.org>",
        f"Subject: {subject}",
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>",
        "",
        *body.replace("\r\n", "\n").split("\n"),
    ]
    return eol.join(lines).encode("utf-8")


def make_store(root: Path, clock: Clock, seed: int = 0) -> MaildirStore:
    """A store on ``root`` with a synchronous executor and deterministic names.

    Stores meant to act as different processes on one Maildir need different ``seed``s.
    """
    counter = iter(range(seed * 10**6 + 1, 10**12))
    return MaildirStore(
        root,
        clock,
        run_blocking=run_now,
        random_bytes=lambda n: next(counter).to_bytes(n, "big"),
        hostname="test.example",
    )


def append(account: MaildirAccount, data: bytes, mailbox: str = "INBOX", **kw: Any) -> int:
    """APPEND ``data`` synchronously; returns the UID."""
    return int(result_of(account.append(mailbox, io.BytesIO(data), **kw)))


def deliver_like_postfix(maildir: Path, name: str, data: bytes) -> Path:
    """Drop a file into ``maildir/new`` the way an external MDA does (tmp, then rename)."""
    tmp = maildir / "tmp" / name
    tmp.write_bytes(data)
    target = maildir / "new" / name
    tmp.rename(target)
    return target


class Worker:
    """A worker thread run by hand: each call waits until the test lets it run (for real)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def run_next(self) -> None:
        f, args, d = self.calls.pop(0)
        try:
            result = f(*args)
        except Exception:
            d.errback()
        else:
            d.callback(result)
