"""Commands that put messages into a mailbox: APPEND, COPY, MOVE and their UID forms.

Twisted's APPEND refuses a date-time without a flag list, keeps the date as
an unparsed string, sends the continuation request before checking that the
mailbox exists and never says ``[TRYCREATE]`` for COPY; its COPY reports
partial failures as a bare ``NO`` after leaving the copies behind.  Here:

* APPEND (RFC 3501 6.3.11) parses ``mailbox [flag-list] [date-time] literal``
  with any of the optional parts, and refuses a missing mailbox with
  ``NO [TRYCREATE]`` *before* the continuation request, as Dovecot does for
  synchronizing literals, so the client never sends the message for nothing.
  Success answers ``OK [APPENDUID validity uid]`` (RFC 4315).  A message
  encrypted to one of the server's own keys (issue 16) is decrypted first and
  stored in clear, with an audit event; one to other keys is stored as sent;
  one to a server key that does not decrypt is refused ``NO [CANNOT]``.
  With ``--clamd`` the message (decrypted) is then scanned: infected is ``NO
  [CANNOT] message refused: <signature>``, clamd unavailable ``NO
  [UNAVAILABLE]``; nothing is stored either way.
* COPY (RFC 3501 6.4.7) copies message by message through the target's
  IMessageCopier; on any failure the copies already made are removed again
  and the command is refused, so a ``NO`` means nothing was copied.  Success
  answers ``OK [COPYUID validity source-uids target-uids]`` (RFC 4315).
* MOVE (RFC 6851) is COPY followed by removing exactly the moved messages
  from the selected mailbox: untagged ``OK [COPYUID ...]``, the untagged
  EXPUNGEs, then the tagged OK.

APPENDUID and COPYUID name the UIDVALIDITY as SELECT presents it
(:mod:`transcoder.imap.view_epoch`), so a client can file the new UIDs
under the value it knows the mailbox by.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.mail import imap4

from transcoder.errors import (
    BadCommand,
    ClientError,
    MailboxError,
    MailboxNotFound,
    MailboxNotFoundTryCreate,
    MailboxReadOnly,
)
from transcoder.imap.fetch import FetchMixin
from transcoder.imap.mailbox_base import MailboxCommandMixin, Parsed, close_session
from transcoder.imap.mailbox_syntax import (
    decode_mailbox_name,
    format_uid_set,
    parse_date_time,
    parse_literal_spec,
    split_flag_list,
    split_quoted,
)
from transcoder.imap.responses import status_text
from transcoder.inbound import decrypt_append_file

log = Logger()

_arg_mailbox = MailboxCommandMixin.arg_mailbox
#: A message set, parsed in linear time like FETCH's (Twisted's ``arg_seqset`` is quadratic).
_arg_seqset = FetchMixin.arg_sequence_set


@dataclass(frozen=True)
class AppendRequest:
    """A parsed APPEND: where to, with which flags and internal date, and the message."""

    name: str
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    message: BinaryIO | None = None


def message_set(uids: list[int]) -> imap4.MessageSet:
    """A MessageSet holding exactly ``uids``."""
    result = imap4.MessageSet()
    for uid in uids:
        result.add(uid)
    return result


def check_sequence_numbers(messages: imap4.MessageSet, exists: int) -> None:
    """Refuse sequence numbers beyond the mailbox (RFC 3501 section 9, ``seq-number``)."""
    for low, high in messages.ranges:
        if any(bound is not None and int(bound) > exists for bound in (low, high)):
            raise BadCommand("Message sequence number out of range")


class TransferMixin(MailboxCommandMixin):
    """APPEND, COPY, MOVE, UID COPY and UID MOVE."""

    # Provided by the view epoch and wire mixins (declared for the type checker only).
    presented_validity: Callable[[int], Coroutine[Any, Any, int]]
    _peer_text: Callable[[], str]

    # -- APPEND -------------------------------------------------------------------

    def arg_append(self, line: bytes | None) -> Parsed:
        """``mailbox [SP flag-list] [SP date-time] SP literal``; the value is an
        :class:`AppendRequest`, or the :class:`ClientError` to refuse it with."""
        first = self._string_argument(line or b"")
        if isinstance(first, defer.Deferred):
            return first.addCallback(lambda result: self._append_options(*result))
        return self._append_options(*first)

    def _append_options(self, raw_name: bytes, rest: bytes) -> Parsed:
        flags: list[str] = []
        date = None
        if rest[:1] == b"(":
            flags, rest = split_flag_list(rest)
        if rest[:1] == b'"':
            raw_date, rest = split_quoted(rest)
            date = parse_date_time(raw_date)
        if rest[:1] == b"~":  # RFC 3516 section 4.4: a literal8, its octets stored as sent
            rest = rest[1:]
        literal = parse_literal_spec(rest)
        request = AppendRequest("", tuple(flags), date)
        try:
            request = replace(request, name=decode_mailbox_name(raw_name))
            self._check_append_target(request.name, literal.size)
        except ClientError as refusal:
            # Answered before the continuation request, so the client sends
            # no message (RFC 3501 section 7.5); the wire mixin skips the
            # octets of a non-synchronizing literal nobody read.
            return refusal, b""
        d: defer.Deferred[tuple[BinaryIO, bytes]] = self.arg_literal(rest)
        return d.addCallback(lambda result: (replace(request, message=result[0]), result[1]))

    def _check_append_target(self, name: str, size: int) -> None:
        """Refuse an APPEND that cannot succeed, before its message is read."""
        if size == 0:
            raise MailboxError("An empty message cannot be appended")
        if not self.account.exists(name):
            raise MailboxNotFoundTryCreate("No such mailbox")

    def do_APPEND(self, tag: bytes, request: AppendRequest | ClientError) -> None:
        """Store the message; do not report it as EXISTS here (the updates mixin does)."""
        self.run_command(tag, self._append, request)

    auth_APPEND = (do_APPEND, arg_append)
    select_APPEND = auth_APPEND

    async def _append(self, tag: bytes, request: AppendRequest | ClientError) -> None:
        if isinstance(request, ClientError):
            raise request
        assert request.message is not None
        message = request.message
        try:
            message = await self._decrypted(request.message)
            await self._scanned(message)
            uid = await defer.maybeDeferred(
                self.account.append,
                request.name,
                message,
                request.flags,
                request.internal_date,
            )
        finally:
            request.message.close()
            message.close()  # the decrypted copy, when there is one
        validity = await self.appenduid_validity(request.name)
        code = None if validity is None else f"APPENDUID {validity} {int(uid)}"
        self.sendPositiveResponse(tag, status_text(code, "APPEND completed"))

    async def _decrypted(self, message: BinaryIO) -> BinaryIO:
        """The message to store: ``message`` decrypted when it is encrypted to a server key
        (issue 16, :mod:`transcoder.inbound`), else as sent.  Decryption runs in the key
        layer's pool; ``NO [CANNOT]`` for one to a server key that does not decrypt."""
        keys = getattr(self, "keys", None)
        if keys is None or keys.server is None:
            return message
        found = await keys.store.run(decrypt_append_file, message, keys.server)
        if found is None:
            return message
        # Audited like a key operation (DIR/audit.jsonl, or PostgreSQL's audit table) before
        # anything is stored: a decryption the trail cannot record fails closed.
        try:
            await keys.store.record_event(
                "append-decrypted",
                str(getattr(self.account, "address", "")),
                keys.now(),
                {
                    "format": found.format.value,
                    "fingerprint": found.fingerprint,
                    "size": found.size,
                },
                {"peer": self._peer_text(), "via": "imap"},
            )
        except BaseException:
            found.file.close()
            raise
        return found.file

    async def _scanned(self, message: BinaryIO) -> None:
        """Refuse the message when the factory's clamd (``--clamd``) finds a signature in
        it (``NO [CANNOT] message refused: <name>``) or gives no verdict (``NO
        [UNAVAILABLE]``: fail closed).  Runs in the reactor's thread pool."""
        scanner = getattr(getattr(self, "factory", None), "scanner", None)
        if scanner is None:
            return
        try:
            await threads.deferToThread(scanner.check, message)
        except ClientError as refused:
            log.info(
                "APPEND from {peer} refused by the virus scan: {why}",
                peer=self._peer_text(),
                why=refused.text,
            )
            raise

    async def appenduid_validity(self, name: str) -> int | None:
        """Seam: UIDVALIDITY of ``name`` for APPENDUID; ``None`` (no code) if it cannot be had.

        Here the mailbox is selected to read it (a store whose account knows
        it otherwise -- the backend front -- overrides this).

        The message is stored by then: failing the APPEND would invite the
        client to store it twice.
        """
        try:
            if name == self.selected_mailbox_name():
                return await self.presented_validity(int(self.mbox.getUIDValidity()))
            session = await defer.maybeDeferred(self.account.select, name, False)
            if session is None:
                return None
            try:
                stored = int(session.getUIDValidity())
            finally:
                close_session(session)
            return await self.presented_validity(stored)
        except Exception:
            log.failure("reading UIDVALIDITY after APPEND failed")
            return None

    # -- COPY / MOVE --------------------------------------------------------------

    def do_COPY(
        self, tag: bytes, messages: imap4.MessageSet, raw_name: bytes, uid: int = 0
    ) -> None:
        """COPY / UID COPY into another (or the same) mailbox."""
        self.run_command(tag, self._copy, messages, raw_name, bool(uid), False)

    select_COPY = (do_COPY, _arg_seqset, _arg_mailbox)

    def do_MOVE(
        self, tag: bytes, messages: imap4.MessageSet, raw_name: bytes, uid: int = 0
    ) -> None:
        """MOVE / UID MOVE (RFC 6851): copy, then expunge exactly the moved messages."""
        self.run_command(tag, self._copy, messages, raw_name, bool(uid), True)

    select_MOVE = (do_MOVE, _arg_seqset, _arg_mailbox)

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> Any:
        """UID MOVE besides the UID commands handled further down the chain."""
        if command.upper() == b"MOVE":
            return self.dispatchCommand(tag, b"MOVE", line, uid=1)
        return super().do_UID(tag, command, line)

    async def _copy(
        self, tag: bytes, messages: imap4.MessageSet, raw_name: bytes, uid: bool, move: bool
    ) -> None:
        name = decode_mailbox_name(raw_name)
        source = self.mbox
        if move and not source.isWriteable():
            raise MailboxReadOnly("Mailbox is read-only")
        if not uid:
            check_sequence_numbers(messages, source.getMessageCount())
        target = await self._open_copy_target(name)
        expunged: list[int] = []
        try:
            found = list(await defer.maybeDeferred(source.fetch, messages, uid))
            source_uids = [int(message.getUID()) for _, message in found]
            new_uids = await self._copy_messages(found, target)
            if move:
                expunged = await self._expunge_moved(source, target, source_uids, new_uids)
            stored = int(target.getUIDValidity())
        finally:
            close_session(target)
        code = None
        if found:
            validity = await self.presented_validity(stored)
            sources = format_uid_set(source_uids).decode("ascii")
            copies = format_uid_set(new_uids).decode("ascii")
            code = f"COPYUID {validity} {sources} {copies}"
        if not move:
            self.sendPositiveResponse(tag, status_text(code, "COPY completed"))
            return
        if code is not None:
            self.sendUntaggedResponse(b"OK " + status_text(code, "Moved"))
        for seq in expunged:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        self.sendPositiveResponse(tag, b"MOVE completed")

    async def _open_copy_target(self, name: str) -> Any:
        """A read-write session on the target mailbox; ``NO [TRYCREATE]`` when missing."""
        try:
            target = await defer.maybeDeferred(self.account.select, name, True)
        except MailboxNotFound:
            target = None
        if target is None:
            raise MailboxNotFoundTryCreate("No such mailbox")
        return target

    async def _copy_messages(self, found: list[tuple[int, Any]], target: Any) -> list[int]:
        """Copy ``found`` into ``target`` in order; the new UIDs, in the same order.

        On failure the copies made so far are removed before re-raising.
        """
        new_uids: list[int] = []
        try:
            for _, message in found:
                new_uids.append(int(await defer.maybeDeferred(target.copy, message)))
        except BaseException:
            await self._discard_copies(target, new_uids)
            raise
        return new_uids

    async def _expunge_moved(
        self, source: Any, target: Any, uids: list[int], copies: list[int]
    ) -> list[int]:
        """Remove the moved messages from the selected mailbox; the EXPUNGE sequence numbers.

        If that fails the copies are removed again: a refused MOVE moved nothing.
        """
        if not uids:
            return []
        try:
            # The store's UID EXPUNGE removes only \Deleted messages (RFC 4315),
            # so the moved ones are marked first (RFC 6851 section 3.3).
            marked = message_set(uids)
            await defer.maybeDeferred(source.store, marked, ["\\Deleted"], 1, True)
            return list(await defer.maybeDeferred(source.uid_expunge, uids))
        except BaseException:
            await self._discard_copies(target, copies)
            raise

    async def _discard_copies(self, target: Any, uids: list[int]) -> None:
        """Best effort: expunge the copies a failed COPY/MOVE made."""
        if not uids:
            return
        try:
            # The copies joined the mailbox after the target session opened:
            # bring them into its snapshot before addressing them by UID.
            target.poll()
            await defer.maybeDeferred(target.store, message_set(uids), ["\\Deleted"], 1, True)
            await defer.maybeDeferred(target.uid_expunge, uids)
        except Exception:
            log.failure("removing partial copies failed")
