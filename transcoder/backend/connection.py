"""One IMAP connection to the backend server, for one client session (issue 11).

:func:`connect` opens ``imap://HOST:PORT`` (plain TCP: loopback or a private
link) or ``imaps://HOST:PORT`` (implicit TLS, the certificate verified
against ``--backend-ca`` or the system's trust store, host name included) and
waits for the greeting.  :class:`BackendProtocol` then issues commands
(:meth:`BackendProtocol.command`, pipelined: each is written at once, answered
by its tag) and hands every untagged response both to the commands in flight
and to a ``listener`` -- the selected mailbox, which relays EXISTS, EXPUNGE
and FETCH FLAGS through the IMAP layer's ``MailboxUpdates`` (RFC 3501 section
7.4.1 is kept by the front's own poll points).

Literals the backend sends are streamed into disk-backed spools as they
arrive (:mod:`.response_syntax`): a 100 MB message costs constant memory.

Why not Twisted's ``IMAP4Client``: it buffers every literal in memory,
answers with parsed Python structures only for the commands it knows (its
FETCH parser drops what it does not expect), serialises nothing the front
needs (UID-keyed results, unsolicited updates routed to a mailbox) and would
have to be subclassed through name-mangled internals.  The front needs a few
commands, literals on disk and every untagged response; that is this small
client.

A backend that goes away -- connection lost, ``* BYE``, no answer within
``command_timeout`` -- fails every command in flight with
:class:`BackendUnavailable` (a ``NO [UNAVAILABLE]`` for the client) and runs
the ``on_lost`` callbacks, through which the front ends its client's session
with ``* BYE [UNAVAILABLE]``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, cast

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from transcoder.backend.response_syntax import (
    Continuation,
    DataResponse,
    Response,
    ResponseReader,
    ResponseRelay,
    ResponseSyntaxError,
    StatusResponse,
    parse_response,
)
from transcoder.errors import ClientError, ConfigurationError

log = Logger()

_URL = re.compile(r"\A(imaps?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})/?\Z")
#: Response codes of the backend passed on to the client as they are (RFC 5530, RFC 3501).
PASSED_CODES = frozenset(
    {
        "ALREADYEXISTS",
        "CANNOT",
        "CLIENTBUG",
        "EXPUNGEISSUED",
        "LIMIT",
        "NONEXISTENT",
        "NOPERM",
        "OVERQUOTA",
        "TRYCREATE",
        "UNAVAILABLE",
        "INUSE",
        "READ-ONLY",
        "TOOBIG",
        "BADCHARSET",
    }
)


#: Octets asked of the socket per read (Twisted's default is 64 KiB): a 100 MB literal
#: relayed in 256 KiB steps costs a quarter of the reactor turns.
READ_SIZE = 2**18
#: An IDLE is ended and issued again this often (RFC 2177: at least every 29 minutes).
IDLE_REFRESH = 25 * 60.0


class BackendUnavailable(ClientError):
    """The backend server is unreachable or went away."""

    code = "UNAVAILABLE"


class BackendRefused(ClientError):
    """The backend refused the command (its NO/BAD, with its response code when it is one of ours).

    The text is the backend's own: it is about the client's request (a
    mailbox name, a message set) and holds no secret of the front.
    """

    code = "CANNOT"


@dataclass(frozen=True)
class BackendAddress:
    """Where the backend is: ``imap://host:port`` or ``imaps://host:port``."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BackendAddress:
        """The address of ``url``; ConfigurationError if it is not ``imap[s]://HOST:PORT``."""
        match = _URL.match(url.strip())
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise ConfigurationError(
                f"--backend must be imap://HOST:PORT or imaps://HOST:PORT, not {url!r}"
            )
        return cls(match.group(1) == "imaps", match.group(2).strip("[]"), int(match.group(3)))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'imaps' if self.tls else 'imap'}://{host}:{self.port}"


@dataclass(frozen=True)
class BackendSettings:
    """How to reach the backend: its address, the CA file for ``imaps``, and timeouts."""

    address: BackendAddress
    ca_file: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    #: Where literals beyond 64 KiB are spooled (unnamed files; None: the system's TMPDIR).
    spool_dir: str | None = None


@dataclass
class CommandResult:
    """A completed command: its tagged status and the untagged responses sent meanwhile."""

    status: StatusResponse
    untagged: list[Response] = field(default_factory=list)

    def data(self, name: bytes) -> list[DataResponse]:
        """The untagged data responses named ``name`` (``LIST``, ``FETCH``...)."""
        return [r for r in self.untagged if isinstance(r, DataResponse) and r.name == name]

    def codes(self, name: bytes) -> list[bytes]:
        """The arguments of untagged ``OK [name ...]`` codes (``UIDVALIDITY``...)."""
        return [
            r.code_argument
            for r in self.untagged
            if isinstance(r, StatusResponse) and r.code_name == name
        ]


@dataclass(frozen=True)
class Literal:
    """A command argument sent as a literal (RFC 3501 section 4.3; ``{n+}`` with LITERAL+)."""

    value: bytes


@dataclass(frozen=True)
class FileLiteral:
    """A literal argument read from an open file of ``size`` octets (APPEND's message).

    ``binary``: sent as a literal8 ``~{n}`` (RFC 3516 section 4.4: octets holding NUL).
    """

    source: BinaryIO
    size: int
    binary: bool = False


class _StopWriting(Exception):
    """The command was answered before its literal was sent: stop writing it."""


@dataclass
class _Command:
    tag: bytes
    pieces: list[bytes | Literal | FileLiteral]
    result: defer.Deferred[CommandResult]
    untagged: list[Response] = field(default_factory=list)
    relay: Relay | None = None


class Relay(ResponseRelay, Protocol):
    """A :class:`~.response_syntax.ResponseRelay` that writes what it took once per read."""

    def flush(self) -> None:
        """Write what was taken so far."""


class BackendProtocol(protocol.Protocol):
    """The client side of one backend connection (see the module docstring)."""

    def __init__(
        self, clock: IReactorTime, command_timeout: float = 120.0, spool_dir: str | None = None
    ) -> None:
        self.clock = clock
        self.command_timeout = command_timeout
        self.greeting: defer.Deferred[StatusResponse] = defer.Deferred()
        self.capabilities: frozenset[bytes] = frozenset()
        self.listener: Callable[[Response], None] | None = None
        self.on_lost: list[Callable[[], None]] = []
        self.connected_now = False
        self._reader = ResponseReader(spool_dir=spool_dir)
        #: Commands written so far (IDLE and its DONE count one): a figure for tests and logs.
        self.commands_sent = 0
        self._tags = (b"b%d" % n for n in itertools.count(1))
        self._in_flight: dict[bytes, _Command] = {}
        self._queue: list[_Command] = []
        self._writing: defer.Deferred[None] | None = None
        self._continuation: tuple[_Command, defer.Deferred[None]] | None = None
        self._timer: IDelayedCall | None = None
        self._heard = 0.0
        self._bye: StatusResponse | None = None
        # IDLE (RFC 2177): wanted by the selected mailbox while its client idles.
        self._want_idle = False
        self._idle: _Command | None = None
        self._idle_active = False
        self._done_sent = False
        self._idle_refresh: IDelayedCall | None = None

    # -- connection events --------------------------------------------------------

    def connectionMade(self) -> None:
        """Wait for the greeting (within the command timeout)."""
        self.connected_now = True
        if isinstance(getattr(self.transport, "bufferSize", None), int):
            self.transport.bufferSize = READ_SIZE  # plain TCP: fewer, larger reads
        self._arm_timer()

    def dataReceived(self, data: bytes) -> None:
        """Parse responses and dispatch them; a malformed one ends the connection.

        Any octet counts as an answer for the timeout: a large literal arriving
        slowly is a backend at work, not a backend gone.  A relay taking
        responses (:meth:`command`'s ``relay``) is flushed once per read.
        """
        if self._timer is not None:
            self._heard = self.clock.seconds()
        relay = cast(Relay | None, self._reader.relay)
        try:
            for pieces in self._reader.responses(data):
                self._dispatch(parse_response(pieces))
        except ResponseSyntaxError as e:
            log.error("backend sent a malformed response: {error}", error=e)
            self.transport.abortConnection()
        finally:
            if relay is not None:
                relay.flush()

    @property
    def relaying(self) -> bool:
        """Whether a relayed response is half handed on (its rest cannot follow if lost)."""
        return self._reader.relaying

    def pause_reading(self) -> None:
        """Stop reading the backend (a relay's client is full); no answer timeout meanwhile."""
        self._cancel_timer()
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read the backend again (the relay's client drained)."""
        self.transport.resumeProducing()
        if self._in_flight and self.connected_now:
            self._arm_timer()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Fail what waits; tell the owners (their client gets BYE)."""
        self.connected_now = False
        self._cancel_timer()
        if self._idle_refresh is not None and self._idle_refresh.active():
            self._idle_refresh.cancel()
        why = "the backend server closed the connection"
        if self._bye is not None:
            why = "the backend server said BYE: " + self._bye.text.decode("utf-8", "replace")
        error = BackendUnavailable("Backend server unavailable")
        if not self.greeting.called:
            self.greeting.errback(Failure(BackendUnavailable(f"no greeting: {reason.value}")))
        waiting = [*self._in_flight.values(), *self._queue]
        self._in_flight.clear()
        self._queue.clear()
        self._stop_continuation()
        for command in waiting:
            if not command.result.called:
                command.result.errback(Failure(error))
        if waiting or self.on_lost:
            log.info("backend connection ended: {why}", why=why)
        callbacks, self.on_lost = self.on_lost, []
        for callback in callbacks:
            callback()

    # -- commands ------------------------------------------------------------------

    def command(
        self, *pieces: bytes | Literal | FileLiteral, relay: Relay | None = None
    ) -> defer.Deferred[CommandResult]:
        """Send ``tag`` + the pieces (joined by spaces); fires when the tagged OK comes.

        A NO or BAD errbacks with :class:`BackendRefused`; a lost backend
        with :class:`BackendUnavailable`.  With ``relay``, from the command's
        sending to its tagged answer every untagged response is offered to
        the relay first (:class:`~.response_syntax.ResponseRelay`): those it
        takes are handed on as they arrive, never spooled nor parsed here.
        """
        if not self.connected_now:
            return defer.fail(BackendUnavailable("Backend server unavailable"))
        command = _Command(next(self._tags), list(pieces), defer.Deferred(), relay=relay)
        self._queue.append(command)
        self._end_idle()  # DONE first; IDLE resumes once the queue is answered
        self._send_queued()
        return command.result.addCallback(_check_ok)

    def _send_queued(self) -> None:
        """Write the next queued command unless one is still being written (pipelining)."""
        if self._writing is not None or not self._queue or not self.connected_now:
            return
        if self._idle is not None:
            return  # after IDLE's tagged answer (RFC 2177: nothing but DONE meanwhile)
        command = self._queue.pop(0)
        self._in_flight[command.tag] = command
        if command.relay is not None:
            self._reader.relay = command.relay
        self.commands_sent += 1
        self._arm_timer()
        self._writing = defer.Deferred.fromCoroutine(self._write(command))
        self._writing.addErrback(self._write_failed)
        self._writing.addBoth(self._written)

    def _write_failed(self, failure: Failure) -> None:
        if failure.check(_StopWriting) or not self.connected_now:
            return  # answered before its literal, or the connection is gone anyway
        log.failure("writing to the backend failed", failure)
        self.transport.abortConnection()

    def _written(self, _: object) -> None:
        self._writing = None
        self._send_queued()

    async def _write(self, command: _Command) -> None:
        """Write ``tag pieces CRLF``; a literal's octets after ``+`` unless LITERAL+ (RFC 7888).

        A file literal is streamed with a producer: the transport's buffer,
        not the front's memory, holds what the backend has not read yet.
        """
        out = bytearray(command.tag)
        for piece in command.pieces:
            out += b" "
            if isinstance(piece, bytes):
                out += piece
                continue
            size = len(piece.value) if isinstance(piece, Literal) else piece.size
            plus = b"LITERAL+" in self.capabilities
            literal8 = b"~" if isinstance(piece, FileLiteral) and piece.binary else b""
            out += literal8 + b"{%d%s}\r\n" % (size, b"+" if plus else b"")
            self.transport.write(bytes(out))
            out = bytearray()
            if not plus:
                self._continuation = (command, defer.Deferred())
                await self._continuation[1]
            if isinstance(piece, Literal):
                self.transport.write(piece.value)
            else:
                await FileSender().beginFileTransfer(piece.source, self.transport)
        self.transport.write(bytes(out) + b"\r\n")

    def _continue(self) -> None:
        if self._idle is not None and not self._idle_active and self._continuation is None:
            self._idle_active = True  # "+ idling"
            self._cancel_timer()  # the backend now speaks only when something changes
            self._idle_refresh = self.clock.callLater(IDLE_REFRESH, self._end_idle)
            if not self._want_idle or self._queue:
                self._end_idle()
            return
        waiting, self._continuation = self._continuation, None
        if waiting is None:
            log.warn("backend sent an unexpected continuation request")
            return
        waiting[1].callback(None)

    # -- IDLE (RFC 2177) --------------------------------------------------------------

    @property
    def idling(self) -> bool:
        """Whether the connection idles (or is about to) for a listener's sake."""
        return self._want_idle and b"IDLE" in self.capabilities

    def set_idle(self, wanted: bool) -> None:
        """IDLE whenever no command is outstanding (``wanted``), or stop idling."""
        self._want_idle = wanted
        if wanted:
            self._maybe_idle()
        else:
            self._end_idle()

    def _maybe_idle(self) -> None:
        if not (self.idling and self.connected_now) or self._idle is not None:
            return
        if self._queue or self._in_flight or self._writing is not None:
            return
        command = _Command(next(self._tags), [b"IDLE"], defer.Deferred())
        self._idle, self._idle_active, self._done_sent = command, False, False
        self._in_flight[command.tag] = command
        self.commands_sent += 1
        command.result.addBoth(self._idle_ended)
        self._arm_timer()  # until "+ idling"
        self.transport.write(command.tag + b" IDLE\r\n")

    def _end_idle(self) -> None:
        """Send DONE once the backend idles (at its "+" if it has not yet)."""
        if self._idle_refresh is not None and self._idle_refresh.active():
            self._idle_refresh.cancel()
        self._idle_refresh = None
        if self._idle is None or self._done_sent or not self._idle_active:
            return
        self._done_sent = True
        self._arm_timer()
        self.transport.write(b"DONE\r\n")

    def _idle_ended(self, result: object) -> None:
        self._idle, self._idle_active, self._done_sent = None, False, False
        if isinstance(result, CommandResult) and result.status.status != b"OK":
            log.warn("backend refused IDLE; polling instead")
            self._want_idle = False
            self.capabilities = self.capabilities - {b"IDLE"}
        if isinstance(result, Failure):
            return
        self._send_queued()
        self._maybe_idle()

    def _stop_continuation(self) -> None:
        waiting, self._continuation = self._continuation, None
        if waiting is not None:
            waiting[1].errback(Failure(_StopWriting()))

    def logout(self) -> None:
        """LOGOUT (best effort) and close."""
        if not self.connected_now:
            return
        self.on_lost = []
        d = self.command(b"LOGOUT")
        d.addBoth(lambda _: self.transport.loseConnection())

    # -- responses ------------------------------------------------------------------

    def _dispatch(self, response: Response) -> None:
        self._arm_timer()
        if isinstance(response, Continuation):
            self._continue()
            return
        if isinstance(response, StatusResponse) and response.tag != b"*":
            command = self._in_flight.pop(response.tag, None)
            if command is None:
                log.warn("backend answered an unknown tag {tag!r}", tag=response.tag)
                return
            if self._continuation is not None and self._continuation[0] is command:
                self._stop_continuation()  # refused before its literal (RFC 3501 7.5)
            if command.relay is not None and self._reader.relay is command.relay:
                self._reader.relay = None
            if not self._in_flight and not self._queue:
                self._cancel_timer()
            if response.code_name == b"CAPABILITY":  # LOGIN's OK names the new ones
                self.capabilities = frozenset(response.code_argument.upper().split())
            command.result.callback(CommandResult(response, command.untagged))
            self._maybe_idle()
            return
        if not self.greeting.called and isinstance(response, StatusResponse):
            self._greeted(response)
            return
        if isinstance(response, StatusResponse) and response.status == b"BYE":
            self._bye = response
        if isinstance(response, DataResponse) and response.name == b"CAPABILITY":
            self.capabilities = frozenset(t.upper() for t in response.tokens[1:])
        for command in self._in_flight.values():
            command.untagged.append(response)
        if self.listener is not None:
            self.listener(response)

    def _greeted(self, response: StatusResponse) -> None:
        self._cancel_timer()
        if response.code_name == b"CAPABILITY":
            self.capabilities = frozenset(response.code_argument.upper().split())
        if response.status == b"OK":
            self.greeting.callback(response)
        else:
            self.greeting.errback(Failure(BackendUnavailable("backend refused the connection")))
            self.transport.loseConnection()

    # -- the answer timeout ---------------------------------------------------------

    def _arm_timer(self) -> None:
        """Count from now: an answer is due within the timeout (one timer, moved lazily)."""
        if self._idle_active and not self._done_sent:
            return  # idling: silence is normal
        self._heard = self.clock.seconds()
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(self.command_timeout, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        quiet = self.clock.seconds() - self._heard
        if quiet < self.command_timeout:  # heard from meanwhile: wait for the rest
            self._timer = self.clock.callLater(self.command_timeout - quiet, self._timed_out)
            return
        log.error("backend did not answer within {s} s; closing", s=self.command_timeout)
        self.transport.abortConnection()


def _check_ok(result: CommandResult) -> CommandResult:
    status = result.status
    if status.status == b"OK":
        return result
    name = (status.code_name or b"").decode("ascii", "replace")
    text = status.text.decode("utf-8", "replace") or "Backend refused the command"
    code = name if name in PASSED_CODES else None
    raise BackendRefused(text, code=code)


def _tls_options(settings: BackendSettings) -> Any:
    """Client TLS options: the backend's name checked, its chain verified against the CA file."""
    from twisted.internet import ssl

    if settings.ca_file is None:
        trust = ssl.platformTrust()
    else:
        try:
            with open(settings.ca_file, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise ConfigurationError(f"cannot read --backend-ca {settings.ca_file}: {e}") from e
        blocks = re.findall(
            rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL
        )
        if not blocks:
            raise ConfigurationError(f"--backend-ca {settings.ca_file} holds no certificate")
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
    return ssl.optionsForClientTLS(settings.address.host, trustRoot=trust)


def check_settings(settings: BackendSettings) -> None:
    """Fail at start (ConfigurationError) on a CA file that cannot be used."""
    if settings.address.tls:
        _tls_options(settings)


class _Factory(protocol.Factory):
    noisy = False  # one per client session: no "Starting factory" line each time

    def __init__(self, clock: IReactorTime, settings: BackendSettings) -> None:
        self.clock = clock
        self.settings = settings

    def buildProtocol(self, addr: Any) -> BackendProtocol:
        settings = self.settings
        return BackendProtocol(self.clock, settings.command_timeout, settings.spool_dir)


async def _connect(reactor: Any, settings: BackendSettings) -> BackendProtocol:
    address = settings.address
    endpoint: Any = HostnameEndpoint(
        reactor, address.host, address.port, timeout=settings.connect_timeout
    )
    if address.tls:
        endpoint = wrapClientTLS(_tls_options(settings), endpoint)
    try:
        proto: BackendProtocol = await endpoint.connect(_Factory(reactor, settings))
    except Exception as e:
        log.error("cannot connect to the backend {address}: {error}", address=address, error=e)
        raise BackendUnavailable("Backend server unavailable") from e
    try:
        await proto.greeting
    except BackendUnavailable:
        log.error("backend {address} sent no greeting (TLS verification failed?)", address=address)
        raise BackendUnavailable("Backend server unavailable") from None
    return proto


def connect(reactor: Any, settings: BackendSettings) -> defer.Deferred[BackendProtocol]:
    """A greeted connection to the backend; BackendUnavailable (logged) if none can be had."""
    return defer.Deferred.fromCoroutine(_connect(reactor, settings))
