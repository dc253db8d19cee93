"""One user's mailboxes on the backend server, as the IMAP layer's account (issue 11).

:class:`BackendAccount` is the ``IAccount`` the realm (:mod:`.auth`) hands out
for a login the backend accepted.  It owns the client session's backend
connection and answers the IMAP layer's account calls over it:

* LIST / LSUB: the backend's own matching, names decoded from modified UTF-7
  for the IMAP layer (which encodes them again);
* SELECT / EXAMINE: the backend's SELECT / EXAMINE, then the snapshot of
  UIDs and flags (:class:`~transcoder.backend.mailbox.BackendMailbox`);
* STATUS: the backend's STATUS (:meth:`BackendAccount.status`; the one
  backend connection stays on the selected mailbox);
* CREATE / DELETE / RENAME / SUBSCRIBE / UNSUBSCRIBE: passed on as they are;
* APPEND: the backend's APPEND, the message streamed from the front's spool
  (LITERAL+ when the backend has it), the UID from its APPENDUID.

The backend's NO for a command reaches the client with the backend's
response code when it is one the front knows (:data:`.connection.PASSED_CODES`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.mail import imap4
from zope.interface import implementer

from transcoder.backend.connection import (
    BackendProtocol,
    BackendRefused,
    CommandResult,
    FileLiteral,
    Literal,
)
from transcoder.backend.mailbox import BackendMailbox, NotCarried
from transcoder.backend.response_syntax import DataResponse, String, quote
from transcoder.errors import BadCommand, InvalidMailboxName
from transcoder.mime.binary import holds_nul
from transcoder.store.listing import MailboxInfo
from transcoder.store.names import decode_mutf7, encode_mutf7

#: Messages up to this size are scanned for NUL on the reactor thread, larger ones in a worker.
NUL_SCAN_INLINE = 1024 * 1024
_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})


def wire_name(name: str | bytes) -> bytes | Literal:
    """A mailbox name or pattern as a command argument (modified UTF-7, quoted)."""
    text = name if isinstance(name, str) else name.decode("utf-8", "replace")
    encoded = encode_mutf7(text).encode("ascii")
    quoted = quote(encoded)
    return Literal(encoded) if quoted is None else quoted


def _text_name(token: Any) -> str | None:
    """A mailbox name token of the backend's as text; None if it is not modified UTF-7."""
    raw = token.value if isinstance(token, String) else token
    if not isinstance(raw, bytes):
        return None
    try:
        return decode_mutf7(raw.decode("ascii"))
    except ValueError:
        return None


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class BackendAccount:
    """The mailboxes of one address on the backend (see the module docstring)."""

    def __init__(self, address: str, connection: BackendProtocol, clock: Any) -> None:
        self.address = address
        self.connection = connection
        self.clock = clock
        #: The UIDVALIDITY of the backend's APPENDUID for the last APPEND, if it sent one.
        self.appended_validity: int | None = None

    # -- lookup -----------------------------------------------------------------------

    def exists(self, name: str | bytes) -> bool:
        """Asked by APPEND before its literal; only the backend knows, so the APPEND is
        sent and a missing mailbox is the backend's ``NO [TRYCREATE]`` after the message."""
        return True

    def select(self, name: str | bytes, rw: bool = True) -> defer.Deferred[BackendMailbox | None]:
        """SELECT (``rw``) or EXAMINE on the backend; None if the backend refuses the name."""
        return defer.Deferred.fromCoroutine(self._select(name, rw))

    async def _select(self, name: str | bytes, rw: bool) -> BackendMailbox | None:
        text = name if isinstance(name, str) else name.decode("utf-8", "replace")
        verb = b"SELECT" if rw else b"EXAMINE"
        try:
            result = await self.connection.command(verb, wire_name(text))
        except BackendRefused:
            return None
        writeable = rw and result.status.code_name != b"READ-ONLY"
        mailbox = BackendMailbox(self, text, writeable, self.clock, result)
        await mailbox.load_snapshot()
        return mailbox

    def _listing(
        self, verb: bytes, ref: str | bytes, wildcard: str | bytes
    ) -> defer.Deferred[list[tuple[str, MailboxInfo]]]:
        d = self.connection.command(verb, wire_name(ref), wire_name(wildcard))
        return d.addCallback(lambda result: self._entries(result.data(verb)))

    @staticmethod
    def _entries(responses: list[DataResponse]) -> list[tuple[str, MailboxInfo]]:
        out = []
        for response in responses:
            tokens = response.tokens
            if len(tokens) < 4 or not isinstance(tokens[1], list):
                continue
            name = _text_name(tokens[3])
            if name is None:
                continue  # not modified UTF-7: a name the front could not present
            attributes = tuple(t.decode("ascii", "replace") for t in tokens[1])
            out.append((name, MailboxInfo(attributes)))
        return out

    def listMailboxes(
        self, ref: str | bytes, wildcard: str | bytes
    ) -> defer.Deferred[list[tuple[str, MailboxInfo]]]:
        """LIST (RFC 3501 section 6.3.8), matched by the backend."""
        return self._listing(b"LIST", ref, wildcard)

    def list_subscribed(
        self, ref: str | bytes, wildcard: str | bytes
    ) -> defer.Deferred[list[tuple[str, MailboxInfo]]]:
        """LSUB (RFC 3501 section 6.3.9), matched by the backend."""
        return self._listing(b"LSUB", ref, wildcard)

    # -- STATUS -------------------------------------------------------------------------

    def status(self, name: str, items: Iterable[str]) -> defer.Deferred[dict[str, int]]:
        """STATUS on the backend (the selected mailbox stays selected there)."""
        wanted = [item.upper() for item in items]
        for item in wanted:
            if item not in _STATUS_ITEMS:
                raise BadCommand(f"Unknown STATUS item {item}")
        argument = b"(" + " ".join(wanted).encode("ascii") + b")"
        d = self.connection.command(b"STATUS", wire_name(name), argument)
        return d.addCallback(lambda result: self._status_values(result.data(b"STATUS")))

    @staticmethod
    def _status_values(responses: list[DataResponse]) -> dict[str, int]:
        values: dict[str, int] = {}
        for response in responses:
            pairs = response.tokens[2] if len(response.tokens) > 2 else []
            if not isinstance(pairs, list):
                continue
            for i in range(0, len(pairs) - 1, 2):
                key, value = pairs[i], pairs[i + 1]
                if isinstance(key, bytes) and isinstance(value, bytes) and value.isdigit():
                    values[key.decode("ascii").upper()] = int(value)
        return values

    # -- hierarchy and subscriptions: passed on ---------------------------------------------

    def _simple(self, verb: bytes, *names: str | bytes) -> defer.Deferred[bool]:
        for name in names:
            text = name if isinstance(name, str) else name.decode("utf-8", "replace")
            if not text:
                raise InvalidMailboxName("Empty mailbox name")
        d = self.connection.command(verb, *(wire_name(n) for n in names))
        return d.addCallback(lambda _: True)

    def create(self, pathspec: str | bytes) -> defer.Deferred[bool]:
        """CREATE on the backend."""
        return self._simple(b"CREATE", pathspec)

    def addMailbox(self, name: str | bytes, mbox: Any = None) -> defer.Deferred[bool]:
        """IAccount's create (only ``mbox=None``)."""
        if mbox is not None:
            raise NotCarried("Cannot add a foreign mailbox object to a backend account")
        return self.create(name)

    def delete(self, name: str | bytes) -> defer.Deferred[bool]:
        """DELETE on the backend."""
        return self._simple(b"DELETE", name)

    def rename(self, oldname: str | bytes, newname: str | bytes) -> defer.Deferred[bool]:
        """RENAME on the backend."""
        return self._simple(b"RENAME", oldname, newname)

    def subscribe(self, name: str | bytes) -> defer.Deferred[bool]:
        """SUBSCRIBE on the backend."""
        return self._simple(b"SUBSCRIBE", name)

    def unsubscribe(self, name: str | bytes) -> defer.Deferred[bool]:
        """UNSUBSCRIBE on the backend."""
        return self._simple(b"UNSUBSCRIBE", name)

    def isSubscribed(self, name: str | bytes) -> bool:
        """Not known without asking the backend: LSUB answers it."""
        return False

    # -- namespaces (RFC 2342) ------------------------------------------------------------

    def getPersonalNamespaces(self) -> list[list[str]]:
        """One personal namespace: ``("" "/")`` (the backend's delimiter is checked at login)."""
        return [["", "/"]]

    def getSharedNamespaces(self) -> list[list[str]] | None:
        """None: shared namespaces are not carried."""
        return None

    def getUserNamespaces(self) -> list[list[str]] | None:
        """None: other users' namespaces are not carried."""
        return None

    getOtherNamespaces = getUserNamespaces

    # -- adding messages -----------------------------------------------------------------

    def append(
        self,
        name: str | bytes,
        source: BinaryIO,
        flags: Iterable[str | bytes] = (),
        date: datetime | None = None,
    ) -> defer.Deferred[int]:
        """APPEND on the backend, the message streamed from ``source``; fires with its UID.

        The backend's APPENDUID (RFC 4315) gives the UID; its UIDVALIDITY is kept
        in :attr:`appended_validity` for the front's own APPENDUID.
        """
        self.appended_validity = None
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
        pieces: list[bytes | Literal | FileLiteral] = [wire_name(name)]
        names = [f if isinstance(f, bytes) else f.encode("utf-8") for f in flags]
        if names:
            pieces.append(b"(" + b" ".join(names) + b")")
        if isinstance(date, datetime):
            stamp = date if date.tzinfo is not None else date.replace(tzinfo=UTC)
            pieces.append(b'"' + stamp.strftime("%d-%b-%Y %H:%M:%S %z").encode("ascii") + b'"')
        # RFC 3516 section 4.4: octets holding NUL go as a literal8 (a large message is
        # scanned in a thread).
        scan = threads.deferToThread if size > NUL_SCAN_INLINE else defer.maybeDeferred
        d = scan(holds_nul, source)
        d.addCallback(
            lambda nul: self.connection.command(b"APPEND", *pieces, FileLiteral(source, size, nul))
        )
        d.addCallback(self._appended)
        return d.addCallback(self._after_news)

    def _after_news(self, result: Any) -> Any:
        """``result``, once the selected mailbox knows the UIDs of messages just announced.

        An APPEND to the selected mailbox is told to the client with the
        command's answer (RFC 3501 section 6.3.11), so the UID the backend's
        EXISTS calls for must be known by then.
        """
        listener = getattr(self.connection.listener, "__self__", None)
        settled = getattr(listener, "settled", None)
        if settled is None:
            return result
        return settled().addCallback(lambda _: result)

    def _appended(self, result: CommandResult) -> int:
        status = result.status
        parts = status.code_argument.split() if status.code_name == b"APPENDUID" else []
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            self.appended_validity = int(parts[0])
            return int(parts[1])
        return 0
