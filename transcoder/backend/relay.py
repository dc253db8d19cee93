"""COPY, MOVE and SEARCH carried to the backend for the selected mailbox (issue 11).

:class:`RelayMixin` is the part of :class:`~transcoder.backend.mailbox.BackendMailbox`
that hands whole commands to the backend: ``UID COPY`` / ``UID MOVE`` (the
target never selected: the session's one connection stays on the client's
mailbox) and ``UID SEARCH`` (evaluated on the plaintext the backend stores),
their answers translated into the client's snapshot.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.mail import imap4

from transcoder.backend.connection import CommandResult, Literal
from transcoder.backend.response_syntax import format_uid_set
from transcoder.backend.search_map import criteria_by_uid
from transcoder.errors import MailboxError


class NotCarried(MailboxError):
    """A command the backend front does not carry through (docs/design.md, "Backend front")."""

    code = "CANNOT"


class RelayMixin:
    """COPY/MOVE and SEARCH for :class:`~transcoder.backend.mailbox.BackendMailbox`."""

    # The mailbox's (declared for the type checker only).
    connection: Any
    _uids: list[int]
    _mirror: list[int]
    _expunged: set[int]
    _resolve: Any
    _check_writable: Any
    _commit_expunges: Any

    def copy_on_backend(
        self, messages: imap4.MessageSet, uid: bool, target: bytes | Literal, move: bool
    ) -> defer.Deferred[bytes | None]:
        """``UID COPY`` / ``UID MOVE`` of ``messages`` into ``target`` on the backend.

        Fires with the argument of the backend's COPYUID (``validity sources
        copies``, RFC 4315), or None when nothing was named or the backend
        gave none.  The backend's EXPUNGEs of a MOVE reach the mirror; the
        caller reports them (:meth:`commit_expunges`).
        """
        if move:
            self._check_writable()
            if b"MOVE" not in self.connection.capabilities:
                return defer.fail(NotCarried("The backend server has no MOVE"))
        wanted = [u for _, u in self._resolve(messages, uid) if u not in self._expunged]
        if not wanted:
            return defer.succeed(None)
        verb = b"UID MOVE " if move else b"UID COPY "
        d = self.connection.command(verb + format_uid_set(wanted), target)

        def copyuid(result: CommandResult) -> bytes | None:
            if result.status.code_name == b"COPYUID":
                return result.status.code_argument
            found = result.codes(b"COPYUID")
            return found[0] if found else None

        return d.addCallback(copyuid)

    def commit_expunges(self) -> list[int]:
        """Drop what the backend expunged from the client's snapshot; the sequence numbers."""
        return self._commit_expunges()

    def search_on_backend(
        self,
        criteria: list[bytes | Literal],
        uid: bool,
        numbers_matter: bool = True,
        raw: bytes | None = None,
    ) -> defer.Deferred[Any]:
        """``UID SEARCH criteria`` on the backend: the client's sequence numbers or UIDs.

        The backend evaluates the criteria on the plaintext it stores.  Sequence
        numbers in the criteria are the client's (RFC 3501 section 7.4.1): they
        mean the same on the backend while they name the same messages
        (:meth:`_same_numbers`); otherwise -- an expunge waiting to be told --
        the criteria as the client sent them (``raw``, validated) are rewritten
        with the UIDs those numbers name in the client's snapshot
        (:func:`~transcoder.backend.search_map.criteria_by_uid`).  Messages the
        client was not told of yet are left out of the answer.
        """
        if not self._same_numbers(criteria, numbers_matter):
            if raw is None:
                return defer.fail(NotCarried("Mailbox changed on the backend; NOOP, then SEARCH"))
            criteria = criteria_by_uid(raw, list(self._uids))
        d = self.connection.command(b"UID SEARCH", *criteria)
        return d.addCallback(self._search_answer, uid)

    def _same_numbers(self, criteria: list[bytes | Literal], numbers_matter: bool) -> bool:
        """Whether the criteria mean the same messages on the backend as for the client.

        They do while the snapshot is the backend's sequence.  Otherwise ``*``
        (the last message or UID) differs; criteria without sequence numbers
        (``numbers_matter`` false) still do, the answer being limited to the
        snapshot; with sequence numbers, only while nothing waits to be
        expunged and the backend's sequence starts with the snapshot.
        """
        if self._uids == self._mirror:
            return True
        if any(isinstance(c, bytes) and b"*" in c for c in criteria):
            return False
        if not numbers_matter:
            return True
        return not self._expunged and self._mirror[: len(self._uids)] == self._uids

    def _search_answer(self, result: CommandResult, uid: bool) -> list[int]:
        found: set[int] = set()
        for response in result.data(b"SEARCH"):
            found.update(
                int(t) for t in response.tokens[1:] if isinstance(t, bytes) and t.isdigit()
            )
        if uid:
            return [u for u in self._uids if u in found]
        return [seq for seq, u in enumerate(self._uids, 1) if u in found]
