"""The IMAP4rev1 server of imap-transcoder and its factory.

:class:`TranscodingIMAP4Server` is Twisted's ``IMAP4Server`` with the defects a
real client trips over fixed, one concern per mixin module:

* :mod:`.wire` -- line and literal limits, STARTTLS injection, ID, error responses
* :mod:`.command_order` -- pipelined commands run one at a time, answered in order
* :mod:`.login` -- LOGIN / AUTHENTICATE policy; :mod:`.login_check` -- the throttled check,
  failed-login answers and log, the login deadline
* :mod:`.mailboxes` -- SELECT, LIST/LSUB, CREATE/DELETE/RENAME, STATUS, APPEND, COPY, MOVE
* :mod:`.search` -- SEARCH
* :mod:`.transcoding` -- what FETCH serves: the stored message or its transcoded view
* :mod:`.fetch` -- FETCH, with the view seam (``fetch_view``) transcoding fills in
* :mod:`.updates` -- multi-session EXPUNGE/EXISTS/FLAGS, IDLE, EXPUNGE, CLOSE, STORE
* :mod:`.convert` -- CONVERSIONS, CONVERT, UID CONVERT (RFC 5259): parts converted on request
* :mod:`.xkey` -- XKEY: key provisioning and the transcoding policy (docs/xkey.md)
* :mod:`.view_epoch` -- the UIDVALIDITY presented follows the account's views; a session
  whose views changed ends with BYE at its next command

Each mixin overrides IMAP4Server methods cooperatively (calling ``super()``),
so the order of the bases below only matters where two mixins override the
same method; they are listed outermost first.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IReactorTime
from twisted.mail import imap4

from transcoder.imap.command_order import CommandOrderMixin
from transcoder.imap.convert import ConvertMixin
from transcoder.imap.fetch import FetchMixin
from transcoder.imap.login import LoginMixin
from transcoder.imap.login_gate import LoginGate
from transcoder.imap.mailboxes import MailboxesMixin
from transcoder.imap.search import SearchMixin
from transcoder.imap.settings import ServerSettings
from transcoder.imap.transcoding import TranscodingConfig, TranscodingMixin
from transcoder.imap.updates import UpdatesMixin
from transcoder.imap.view_epoch import ViewEpochGateMixin, ViewEpochMixin
from transcoder.imap.wire import WireMixin
from transcoder.imap.xkey import KeyAccess, XKeyMixin


def _dispatch_uid(self: Any, tag: bytes, command: bytes, line: bytes) -> Any:
    """The UID command's table entry: dispatch through ``self.do_UID`` so every
    mixin's cooperative override (UID MOVE, UID EXPUNGE) is in the chain."""
    return self.do_UID(tag, command, line)


class TranscodingIMAP4Server(
    ViewEpochMixin,
    CommandOrderMixin,
    WireMixin,
    ViewEpochGateMixin,
    LoginMixin,
    XKeyMixin,
    ConvertMixin,
    UpdatesMixin,
    MailboxesMixin,
    SearchMixin,
    TranscodingMixin,
    FetchMixin,
    imap4.IMAP4Server,
):
    """An IMAP4rev1 server (RFC 3501) that can serve FETCH from a transcoded view."""

    IDENT = b"imap-transcoder IMAP4rev1 ready"

    select_UID = (_dispatch_uid, imap4.IMAP4Server.arg_atom, imap4.IMAP4Server.arg_line)

    def __init__(
        self,
        settings: ServerSettings | None = None,
        clock: IReactorTime | None = None,
        chal: dict[bytes, Any] | None = None,
        contextFactory: Any = None,
        scheduler: Any = None,
        keys: KeyAccess | None = None,
        transcoding: TranscodingConfig | None = None,
        login_gate: LoginGate | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.settings = settings or ServerSettings()
        self.clock = clock
        # Without a factory's shared gate, failures count on this connection only.
        self.login_gate = login_gate or LoginGate(clock, self.settings.login_throttle)
        self.keys = keys
        self.transcoding = transcoding
        super().__init__(chal=chal, contextFactory=contextFactory, scheduler=scheduler)
        self.timeOut = int(self.settings.preauth_timeout)
        self.POSTAUTH_TIMEOUT = int(self.settings.postauth_timeout)

    def connectionMade(self) -> None:
        """Turn Nagle's algorithm off, then greet.

        Every response is written whole, so coalescing small segments only
        holds back the last one of each until the client's delayed ACK: with
        it on, LOGIN's p50 at 4 clients was 51 ms against 31 ms without
        (benchmarks/imap_load.py).  Wrappers (TLS, PROXY, limits) pass the
        call on to the TCP transport; other transports have no such option.
        """
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        super().connectionMade()

    def callLater(self, period: float, func: Any, *args: Any, **kw: Any) -> Any:
        """TimeoutMixin's scheduling hook, bound to the injected clock."""
        return self.clock.callLater(period, func, *args, **kw)


class TranscodingIMAP4Factory(protocol.ServerFactory):
    """Builds :class:`TranscodingIMAP4Server` protocols sharing one portal and settings.

    ``context_factory`` is the TLS context used for STARTTLS (``None``
    disables STARTTLS); ``keys`` the key layer XKEY works on (``None``: no
    XKEY); ``transcoding`` the transcoders and view cache FETCH serves views
    from (``None``: FETCH always serves the stored message).  Its
    connections share one failed-login throttle, :attr:`login_gate`, on
    ``clock``.  Connection limits are a wrapper around this factory
    (:mod:`transcoder.imap.connection_limits`).
    """

    protocol = TranscodingIMAP4Server

    def __init__(
        self,
        portal: Any,
        settings: ServerSettings | None = None,
        context_factory: Any = None,
        clock: IReactorTime | None = None,
        keys: KeyAccess | None = None,
        transcoding: TranscodingConfig | None = None,
    ) -> None:
        self.portal = portal
        self.settings = settings or ServerSettings()
        self.context_factory = context_factory
        self.clock = clock
        self.keys = keys
        self.transcoding = transcoding
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.login_gate = LoginGate(clock, self.settings.login_throttle)

    def buildProtocol(self, addr: Any) -> TranscodingIMAP4Server:
        """A new server protocol for one connection."""
        proto = self.protocol(
            settings=self.settings,
            clock=self.clock,
            contextFactory=self.context_factory,
            keys=self.keys,
            transcoding=self.transcoding,
            login_gate=self.login_gate,
        )
        proto.portal = self.portal
        proto.factory = self
        return proto
