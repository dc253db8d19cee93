"""The IMAP server as a front before a backend IMAP server (issue 11): what differs.

:class:`BackendIMAP4Server` is the whole :class:`~transcoder.imap.server.TranscodingIMAP4Server`
-- XKEY, views and transcoding, throttled logins, command order, streamed
FETCH, mailbox updates -- with :class:`BackendFrontMixin` in front of it for
what a backend changes:

* **FETCH** loads a message's octets from the backend only when an item
  needs them (content or MIME structure) and no cached view already serves
  it: :meth:`BackendFrontMixin.fetch_view` wraps the view seam;
* **IDLE** makes the backend connection IDLE too (its changes are reported
  at the front's IDLE poll);
* **STATUS** asks the backend (the session's one backend connection stays on
  the selected mailbox); **NOOP** waits for the backend's NOOP, so its
  answer carries what changed there;
* **the backend going away** ends the client's session with
  ``* BYE [UNAVAILABLE]`` (RFC 3501 section 7.1.5) at once; commands already
  waiting get ``NO [UNAVAILABLE]``;
* **SEARCH** is evaluated by the backend on the plaintext it stores;
* **COPY / MOVE** are the backend's UID COPY / UID MOVE (the target never
  selected: the one connection stays on the client's mailbox);
* **APPEND** is the backend's APPEND; APPENDUID names the backend's
  UIDVALIDITY as presented (the IMAP layer would select the mailbox to read it);
* **capabilities**: only what is carried through: MOVE when the backend has it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from transcoder.backend.account import BackendAccount, wire_name
from transcoder.backend.connection import Literal
from transcoder.backend.fetch_relay import RelayPlan, relay_fetch, relay_plan
from transcoder.backend.mailbox import BackendMailbox
from transcoder.backend.message import BackendMessage, OctetsNotLoaded
from transcoder.errors import ClientError
from transcoder.imap.fetch import ExpungeIssued
from transcoder.imap.fetch_syntax import FetchItem
from transcoder.imap.login_gate import peer_host
from transcoder.imap.mailbox_base import MailboxCommandMixin
from transcoder.imap.mailbox_syntax import decode_mailbox_name, format_mailbox
from transcoder.imap.responses import status_text
from transcoder.imap.server import TranscodingIMAP4Factory, TranscodingIMAP4Server
from transcoder.imap.transcoding import ExpungedView
from transcoder.imap.transfer import check_sequence_numbers
from transcoder.store.message import MessageExpunged
from transcoder.store.search_query import SearchKey
from transcoder.store.search_query import Sequence as SequenceKey
from transcoder.store.search_syntax import parse_search_arguments

log = Logger()

#: FETCH items answered without the message's octets (its size is the backend's RFC822.SIZE).
_METADATA_ITEMS = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE"})
#: A literal's announcement in SEARCH criteria (RFC 3501 section 4.3, RFC 7888's ``{n+}``).
_LITERAL = re.compile(rb"\{(\d{1,10})\+?\}\r\n")
#: Capabilities advertised only when the backend has them too (and never before login).
_CARRIED_IF_BACKEND_HAS = (b"MOVE",)


def search_pieces(criteria: bytes) -> list[bytes | Literal]:
    """SEARCH criteria as the client sent them, split into text and literals for the backend.

    The IMAP layer hands the criteria over with each literal inline in wire
    form (``{n}`` CRLF octets, or ``{n+}``); scanning from the start, a
    ``{n}`` CRLF can only be a literal's announcement (a quoted string holds
    no CR or LF), and its octets are skipped whole.
    """
    pieces: list[bytes | Literal] = []
    position = 0
    while True:
        match = _LITERAL.search(criteria, position)
        if match is None:
            break
        text = criteria[position : match.start()].strip(b" ")
        if text:
            pieces.append(text)
        start = match.end()
        end = start + int(match.group(1))
        pieces.append(Literal(criteria[start:end]))
        position = end
    text = criteria[position:].strip(b" ")
    if text:
        pieces.append(text)
    return pieces


def uses_sequence_numbers(key: Any) -> bool:
    """Whether a parsed SEARCH key names messages by sequence number anywhere in its tree."""
    if isinstance(key, SequenceKey):
        return True
    if not dataclasses.is_dataclass(key):
        return False
    for field in dataclasses.fields(key):
        value = getattr(key, field.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, SearchKey) and uses_sequence_numbers(v) for v in values):
            return True
    return False


def _needs_octets(items: tuple[FetchItem, ...]) -> bool:
    """Whether a FETCH's items need the messages' octets (content or MIME structure)."""
    return any(item.section is not None or item.name not in _METADATA_ITEMS for item in items)


def _expunged_view(failure: Any, message: BackendMessage) -> Any:
    """Octets gone from the backend meanwhile: the message is left out of the FETCH, which
    ends ``NO [EXPUNGEISSUED]`` (RFC 2180 section 4.1.2), as on the built-in store."""
    failure.trap(MessageExpunged)
    return ExpungedView(message.getUID())


class BackendFrontMixin:
    """What the front changes in the IMAP server (see the module docstring)."""

    # Attributes of the server this mixin is combined with (for the type checker).
    account: Any
    mbox: Any
    portal: Any
    transport: Any
    _fetch_needs_octets = True
    _backend_gone = False

    # -- capabilities --------------------------------------------------------------

    def capabilities(self) -> dict[bytes, Any]:
        """The server's capabilities less those not carried through to the backend."""
        caps: dict[bytes, Any] = super().capabilities()  # type: ignore[misc]
        account = getattr(self, "account", None)
        backend = account.connection.capabilities if isinstance(account, BackendAccount) else ()
        for name in _CARRIED_IF_BACKEND_HAS:
            if name not in backend:
                caps.pop(name, None)
        return caps

    # -- the backend's connection --------------------------------------------------------

    def logged_in(self) -> None:
        """Logged in: follow the backend connection, whose loss ends this session."""
        super().logged_in()  # type: ignore[misc]
        account = getattr(self, "account", None)
        if isinstance(account, BackendAccount):
            account.connection.on_lost.append(self._backend_lost)

    def login_credentials(self, credentials: Any) -> None:
        """LOGIN's and AUTHENTICATE's credentials carry the client's address for the backend
        (:mod:`.auth` passes it on with ``ID``)."""
        super().login_credentials(credentials)  # type: ignore[misc]
        peer = self.transport.getPeer()
        credentials.client_host = peer_host(peer)
        credentials.client_port = getattr(peer, "port", None)

    def _backend_lost(self) -> None:
        """The backend went away: ``* BYE [UNAVAILABLE]`` and close (RFC 3501 section 7.1.5)."""
        if self._backend_gone or not getattr(self.transport, "connected", True):
            return
        self._backend_gone = True
        self_: Any = self
        self_.sendLine(b"* BYE [UNAVAILABLE] Backend server unavailable")
        self.transport.loseConnection()

    # -- FETCH ------------------------------------------------------------------------

    def do_FETCH(
        self, tag: bytes, messages: Any, items: tuple[FetchItem, ...], uid: int = 0
    ) -> Any:
        """FETCH: relayed from the backend when no policy applies (:mod:`.fetch_relay`).

        Otherwise the IMAP layer's FETCH, noting first whether the items need
        the messages' octets (commands run one at a time).
        """
        self._fetch_needs_octets = _needs_octets(items)
        parent = super().do_FETCH  # type: ignore[misc]
        mbox = getattr(self, "mbox", None)
        if not isinstance(mbox, BackendMailbox):
            return parent(tag, messages, items, uid)
        plan = relay_plan(mbox, messages, items, bool(uid))
        if plan is None:
            return parent(tag, messages, items, uid)
        self_: Any = self

        def decided(selection: Any) -> None:
            if selection is None:
                self._relay(tag, mbox, plan)
            else:
                parent(tag, messages, items, uid)

        def undecided(failure: Any) -> None:
            parent(tag, messages, items, uid)  # fails closed there, with its response code

        self_.fetch_selection().addCallbacks(decided, undecided)
        return None

    def _relay(self, tag: bytes, mbox: BackendMailbox, plan: RelayPlan) -> None:
        self_: Any = self
        saved_timeout = self_.setTimeout(None)
        d = relay_fetch(self, mbox, plan, self_.POSTAUTH_TIMEOUT)

        def done(vanished: bool) -> None:
            self_.setTimeout(saved_timeout)
            if vanished:
                self_.send_error(tag, ExpungeIssued())
            else:
                self_.sendPositiveResponse(tag, b"FETCH completed")

        def failed(failure: Any) -> None:
            if self._backend_gone:
                return  # the client connection was aborted in the middle of a response
            self_.setTimeout(saved_timeout)
            self_.send_error(tag, failure)

        d.addCallbacks(done, failed)

    select_FETCH: Any = (
        do_FETCH,
        TranscodingIMAP4Server.arg_sequence_set,
        TranscodingIMAP4Server.arg_fetch_items,
    )

    def fetch_view(self, message: Any, content: bool = True) -> defer.Deferred[Any]:
        """The view seam, loading the backend's octets only when they are needed.

        The transcoding layer answers from its view cache without reading the
        message; when it must read it (a view to make, a size to predict) on
        the reactor thread, the message raises :class:`OctetsNotLoaded`,
        and the view is asked for again once the octets are here.  A stored
        message served as it is gets its octets when the FETCH's items need them.
        """
        parent = super().fetch_view  # type: ignore[misc]
        if not isinstance(message, BackendMessage):
            return parent(message, content)

        def retry(failure: Any) -> Any:
            failure.trap(OctetsNotLoaded)
            return message.load().addCallback(lambda _: parent(message, content))

        d: defer.Deferred[Any] = parent(message, content)
        d.addErrback(retry)
        d.addCallback(self._with_octets)
        return d

    def _with_octets(self, view: Any) -> Any:
        if isinstance(view, BackendMessage) and not view.loaded and self._fetch_needs_octets:
            return view.load().addErrback(_expunged_view, view)
        return view

    # -- IDLE (RFC 2177) ---------------------------------------------------------------------

    def do_IDLE(self, tag: bytes) -> None:
        """IDLE: the backend connection IDLEs too, so its changes come as they happen."""
        self_: Any = self
        start = getattr(self.mbox, "start_idle", None) if self_.state == "select" else None
        super().do_IDLE(tag)  # type: ignore[misc]
        if start is not None:
            start()

    auth_IDLE: Any = (do_IDLE,)
    select_IDLE: Any = (do_IDLE,)

    def parse_idle(self, line: bytes) -> None:
        """The line ending IDLE: the backend's IDLE ends first."""
        stop = getattr(self.mbox, "stop_idle", None)
        if stop is not None:
            stop()
        super().parse_idle(line)  # type: ignore[misc]

    # -- NOOP and STATUS --------------------------------------------------------------------

    def do_NOOP(self, tag: bytes) -> None:
        """NOOP: in the selected state, the backend's NOOP first (its news are reported)."""
        self_: Any = self
        refresh = getattr(self.mbox, "refresh", None) if self_.state == "select" else None
        if refresh is None:
            self_.sendPositiveResponse(tag, b"NOOP completed")
            return
        d = defer.maybeDeferred(refresh)
        d.addCallbacks(
            lambda _: self_.sendPositiveResponse(tag, b"NOOP completed"),
            lambda failure: self_.send_error(tag, failure),
        )

    unauth_NOOP = (do_NOOP,)
    auth_NOOP = unauth_NOOP
    select_NOOP = unauth_NOOP
    logout_NOOP = unauth_NOOP

    def do_CHECK(self, tag: bytes) -> None:
        """CHECK (RFC 3501 section 6.4.1): as NOOP."""
        self.do_NOOP(tag)

    select_CHECK = (do_CHECK,)

    def do_STATUS(self, tag: bytes, raw_name: bytes, items: list[str]) -> None:
        """STATUS, answered by the backend (the selected mailbox stays selected there)."""
        self_: Any = self
        self_.run_command(tag, self._backend_status, raw_name, items)

    auth_STATUS: Any = (
        do_STATUS,
        MailboxCommandMixin.arg_mailbox,
        MailboxCommandMixin.arg_status_items,
    )
    select_STATUS: Any = auth_STATUS

    async def _backend_status(self, tag: bytes, raw_name: bytes, items: list[str]) -> None:
        self_: Any = self
        name = decode_mailbox_name(raw_name)
        values = await self.account.status(name, items)
        missing = [item for item in items if item not in values]
        if missing:
            raise ClientError("Backend did not report " + " ".join(missing), code="UNAVAILABLE")
        if "UIDVALIDITY" in values:
            values["UIDVALIDITY"] = await self_.presented_validity(int(values["UIDVALIDITY"]))
        body = " ".join(f"{item} {int(values[item])}" for item in items).encode("ascii")
        self_.sendUntaggedResponse(b"STATUS " + format_mailbox(name) + b" (" + body + b")")
        self_.sendPositiveResponse(tag, b"STATUS completed")

    # -- not carried yet (phase 2) -------------------------------------------------------

    def do_SEARCH(self, tag: bytes, criteria: Any, uid: int = 0) -> None:
        """SEARCH / UID SEARCH, evaluated by the backend on the plaintext it stores.

        The criteria are checked by the front's own parser first (``BAD``,
        ``NO [BADCHARSET]`` as on the built-in store), then sent as the client
        sent them, literals included (:func:`search_pieces`).
        """
        self_: Any = self
        if isinstance(criteria, ClientError):
            self_.send_error(tag, criteria)
            return
        try:
            query = parse_search_arguments(criteria)
            pieces = search_pieces(criteria)
        except ClientError as error:
            self_.send_error(tag, error)
            return
        numbers = uses_sequence_numbers(query.key)
        d = defer.maybeDeferred(self.mbox.search_on_backend, pieces, bool(uid), numbers, criteria)

        def answer(numbers: list[int]) -> None:
            # RFC 3501 section 7.2.5: "SEARCH" then one SP before each number.
            self_.sendUntaggedResponse(b"SEARCH" + b"".join(b" %d" % n for n in numbers))
            self_.sendPositiveResponse(tag, b"UID SEARCH completed" if uid else b"SEARCH completed")

        d.addCallbacks(answer, lambda failure: self_.send_error(tag, failure))

    select_SEARCH: Any = (do_SEARCH, TranscodingIMAP4Server.arg_search_criteria)

    def do_COPY(self, tag: bytes, messages: Any, raw_name: bytes, uid: int = 0) -> None:
        """COPY / UID COPY: the backend's UID COPY (its COPYUID passed on, RFC 4315)."""
        self_: Any = self
        self_.run_command(tag, self._backend_copy, messages, raw_name, bool(uid), False)

    def do_MOVE(self, tag: bytes, messages: Any, raw_name: bytes, uid: int = 0) -> None:
        """MOVE / UID MOVE (RFC 6851): the backend's UID MOVE; its EXPUNGEs are reported."""
        self_: Any = self
        self_.run_command(tag, self._backend_copy, messages, raw_name, bool(uid), True)

    select_COPY: Any = (
        do_COPY,
        TranscodingIMAP4Server.arg_sequence_set,
        MailboxCommandMixin.arg_mailbox,
    )
    select_MOVE: Any = (
        do_MOVE,
        TranscodingIMAP4Server.arg_sequence_set,
        MailboxCommandMixin.arg_mailbox,
    )

    async def _backend_copy(
        self, tag: bytes, messages: Any, raw_name: bytes, uid: bool, move: bool
    ) -> None:
        self_: Any = self
        name = decode_mailbox_name(raw_name)
        source = self.mbox
        if not uid:
            check_sequence_numbers(messages, source.getMessageCount())
        copied = await source.copy_on_backend(messages, uid, wire_name(name), move)
        await source.settled()  # copies into this very mailbox are told with the answer
        code = None
        if copied is not None:
            validity, _, sets = copied.partition(b" ")
            if validity.isdigit():
                presented = await self_.presented_validity(int(validity))
                code = f"COPYUID {presented} {sets.decode('ascii', 'replace')}"
        if not move:
            self_.sendPositiveResponse(tag, status_text(code, "COPY completed"))
            return
        if code is not None:
            self_.sendUntaggedResponse(b"OK " + status_text(code, "Moved"))
        for seq in source.commit_expunges():
            self_.sendUntaggedResponse(b"%d EXPUNGE" % seq)
        self_.sendPositiveResponse(tag, b"MOVE completed")

    # -- APPEND -----------------------------------------------------------------------------

    async def appenduid_validity(self, name: str) -> int | None:
        """APPENDUID's UIDVALIDITY: the backend's for the APPEND just made, as presented.

        (The IMAP layer would select ``name`` to read it; here that would move
        the backend connection off the client's mailbox.)
        """
        validity = getattr(self.account, "appended_validity", None)
        if validity is None:
            return None
        self_: Any = self
        return int(await self_.presented_validity(validity))


class BackendIMAP4Server(BackendFrontMixin, TranscodingIMAP4Server):
    """The IMAP server as a front before a backend IMAP server (see the module docstring)."""


class BackendIMAP4Factory(TranscodingIMAP4Factory):
    """Builds :class:`BackendIMAP4Server` protocols; portal: :func:`.auth.make_backend_portal`."""

    protocol = BackendIMAP4Server
