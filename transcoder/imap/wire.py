"""Wire-level fixes to Twisted's IMAP4Server: lines, literals, STARTTLS, errors and ID.

What :class:`WireMixin` changes, each against RFC 3501 (section numbers there
unless named otherwise):

* STARTTLS (6.2.1) throws away whatever the client pipelined behind it before
  the handshake: those octets were sent in the clear and may have been
  injected by an attacker (the CVE-2011-0411 class).
* Literals (4.3): a literal over its cap is refused with ``NO [TOOBIG]``
  before the continuation request, so the client never sends it.  String
  arguments are capped by ``settings.max_astring_literal_size``, APPEND's
  message by ``settings.max_literal_size``.  Non-synchronizing literals
  (LITERAL+, RFC 7888) are accepted; one that is refused -- too large, or
  its command is refused before reaching it -- is read and discarded with
  the rest of its command (RFC 7888 section 4 allows this or a BYE; we keep
  the connection, invariant 5), never executed as commands.
* A command line over ``settings.max_line_length`` gets ``BAD [TOOBIG]`` and
  is skipped up to its CRLF instead of dropping the connection.
* Every failure of a command -- a parser or handler raising, a Deferred
  failing, an 8-bit command name, a command unknown or used in the wrong
  state -- gets a tagged ``<status> [<code>] <text>`` from
  :mod:`transcoder.errors`; server errors are logged.
* Status responses always carry text after their response code (9,
  ``resp-text``).
* ID (RFC 2971) in every state.
* While a command runs, the next command lines -- literal-bearing and
  overlong ones included -- stay unread (:mod:`.command_order`).

Other mixins use :meth:`WireMixin.send_error` and
:attr:`WireMixin.current_command`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from transcoder import __version__
from transcoder.errors import BadCommand, ClientError, LineTooLong, LiteralTooLarge
from transcoder.imap.command_guard import CommandGuard, as_transcoder_error
from transcoder.imap.responses import error_response
from transcoder.imap.settings import ServerSettings
from transcoder.imap.wire_syntax import (
    TAIL,
    CommandSkipper,
    IdSyntaxError,
    command_name,
    complete_status,
    id_pairs,
    is_tag,
    literal_at_end,
    split_id_value,
)

if TYPE_CHECKING:
    from twisted.mail.imap4 import IMAP4Server as _ServerBase
else:
    _ServerBase = object

log = Logger()

_STATE_NAMES = {
    "unauth": "not authenticated",
    "auth": "authenticated",
    "select": "selected",
    "logout": "logout",
}


class WireMixin(_ServerBase):
    """Lines, literals, STARTTLS, error answers and ID for TranscodingIMAP4Server."""

    #: The command being executed (``b"FETCH"``, ``b"UID FETCH"``), set when it
    #: is dispatched and cleared when its tagged response is sent.
    current_command: bytes | None = None
    #: The tag of :attr:`current_command`.
    current_tag: bytes | None = None

    # Twisted's attributes this mixin reads (declared for the type checker only).
    settings: ServerSettings
    state: str
    parseState: str
    startedTLS: bool
    # Provided by the command order mixin (declared for the type checker only).
    hold_input: Callable[[bytes], None]
    next_command_waits: Callable[[], bool]

    _skipper: CommandSkipper | None = None
    _line_literal: tuple[int, bool] | None = None
    _literal_claimed = False
    _quiet_continuation = False
    _receiving = False
    _reparse = False

    @property
    def MAX_LENGTH(self) -> int:
        """LineReceiver's line limit, from the settings."""
        return int(self.settings.max_line_length)

    #: A cap replacing max_astring_literal_size while read_string_literal runs.
    _string_limit: int | None = None

    @property
    def _literalStringLimit(self) -> int:
        """Twisted's cap on string literals, from the settings (Twisted's is 4096)."""
        if self._string_limit is not None:
            return self._string_limit
        return int(self.settings.max_astring_literal_size)

    def capabilities(self) -> dict[bytes, Any]:
        """Add LITERAL+ (RFC 7888) and ID (RFC 2971)."""
        caps: dict[bytes, Any] = super().capabilities()
        caps[b"LITERAL+"] = None
        caps[b"ID"] = None
        return caps

    # -- answering ----------------------------------------------------------

    def send_error(self, tag: bytes | None, error: BaseException | Failure) -> None:
        """Answer ``tag`` with the tagged NO/BAD for ``error`` (untagged if ``tag`` is None).

        A :class:`ClientError` is explained to the client; anything else is
        logged with its traceback and answered ``NO [SERVERBUG]``.
        """
        failure = error if isinstance(error, Failure) else Failure(error)
        answer = as_transcoder_error(failure.value)
        if not isinstance(answer, ClientError):
            log.failure(
                "Command {tag} failed", failure, tag=(tag or b"*").decode("ascii", "replace")
            )
        status, text = error_response(answer)
        if status == b"BAD":
            self.sendBadResponse(tag, text)
        else:
            self.sendNegativeResponse(tag, text)

    def _respond(self, state: bytes, tag: bytes | None, message: bytes | None) -> None:
        """Give every status response its text (RFC 3501 section 9); track the command."""
        state, message = complete_status(state, tag, message)
        super()._respond(state, tag, message)
        # Cleared only after the mixins below have seen which command completes.
        if tag is not None and tag == self.current_tag and state in (b"OK", b"NO", b"BAD"):
            self.current_command = self.current_tag = None

    # -- receiving lines ----------------------------------------------------

    def dataReceived(self, data: bytes) -> Any:
        """Parse what arrived; resume after an overlong line was skipped."""
        if self._receiving:  # re-entered: LineReceiver only buffers
            return super().dataReceived(data)
        self._receiving = True
        try:
            why = super().dataReceived(data)
            while why is None and self._reparse and not self.paused:
                self._reparse = False
                why = super().dataReceived(b"")
        finally:
            self._receiving = False
        return why

    def lineReceived(self, line: bytes) -> None:
        """Handle one line, with the literal it may announce (RFC 3501 4.3, RFC 7888)."""
        if self.next_command_waits():
            # A command is running: this one waits, unread (RFC 3501 5.5).
            self.hold_input(line + self.delimiter)
            return
        literal = literal_at_end(line) if self._reads_literals() else None
        if literal is not None and literal[1]:
            line = line[: line.rfind(b"{")] + b"{%d}" % literal[0]
        outer = (self._line_literal, self._literal_claimed)
        self._line_literal, self._literal_claimed = literal, False
        try:
            super().lineReceived(line)
        except Exception:
            self.send_error(self._error_tag(line), Failure())
        finally:
            claimed = self._literal_claimed
            self._line_literal, self._literal_claimed = outer
        if literal is not None and literal[1] and not claimed:
            # Its command was refused: the octets that follow are not commands.
            self._skip(CommandSkipper(literal[0]))

    def _reads_literals(self) -> bool:
        if self.parseState == "command":
            return True
        pending = (imap4.LiteralString, imap4.LiteralFile)
        return self.parseState == "pending" and isinstance(self._pendingLiteral, pending)

    def rawDataReceived(self, data: bytes) -> None:
        """Literal octets, unless a refused command is being skipped."""
        if self._skipper is None:
            return super().rawDataReceived(data)
        self.resetTimeout()
        rest = self._skipper.feed(data)
        if rest is not None:
            self._skipper = None
            self.setLineMode(rest)
        return None

    def _skip(self, skipper: CommandSkipper) -> None:
        self._skipper = skipper
        self.setRawMode()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer BAD [TOOBIG] and skip the line to its CRLF (Twisted disconnects)."""
        if self.next_command_waits():
            self.hold_input(line)  # answered in its turn, after the running command
            return
        tag = self._error_tag(line)
        if self.parseState == "pending":  # the line completes a command: abandon it
            self._pendingLiteral = None
            self.parseState = "command"
        self.send_error(tag, LineTooLong(f"Command line longer than {self.MAX_LENGTH} octets"))
        end = line.find(self.delimiter)
        if end < 0:
            self._skip(CommandSkipper(None, line))
            return
        literal = literal_at_end(line[max(0, end - TAIL) : end])
        if literal is not None and literal[1]:
            self._skip(CommandSkipper(literal[0]))
        self._reparse = True
        self.dataReceived(line[end + len(self.delimiter) :])

    def _error_tag(self, line: bytes) -> bytes | None:
        """The tag to answer a failed line with, if one can be told."""
        if self.parseState == "pending":
            return self.current_tag
        words = line[:66].split(b" ", 1)
        if self.parseState == "command" and len(words) == 2 and is_tag(words[0]):
            return words[0]
        return None

    # -- commands -------------------------------------------------------------

    def parse_command(self, line: bytes) -> Any:
        """Check the tag and command name before Twisted's parsing; ignore empty lines."""
        words = line.split(None, 2)
        if not words:
            return None
        tag = words[0]
        if not is_tag(tag):
            self.send_error(None, BadCommand("Invalid command tag"))
        elif len(words) == 1:
            self.send_error(tag, BadCommand("Missing command"))
        else:
            try:
                return super().parse_command(line)
            except Exception:
                self.send_error(tag, Failure())
        return None

    def dispatchCommand(self, tag: bytes, cmd: bytes, rest: bytes | None, uid: Any = None) -> Any:
        """Record the command as :attr:`current_command`; refuse unknown and misplaced ones."""
        name = cmd.upper()
        self.current_tag = tag
        self.current_command = b"UID " + name if uid else name
        if self.lookupCommand(name) is None:
            self.send_error(tag, self._unavailable(name))
            return None
        return super().dispatchCommand(tag, name, rest, uid)

    def lookupCommand(self, cmd: bytes) -> tuple[Any, ...] | None:
        """The command-table entry for ``cmd`` in this state, guarded; None if there is none."""
        if command_name(cmd) is None:
            return None  # e.g. 8-bit octets, which Twisted's lookup would choke on
        entry = super().lookupCommand(cmd)
        return None if entry is None else CommandGuard().wrap(entry)

    def _unavailable(self, name: bytes) -> BadCommand:
        """Why ``name`` cannot run: unknown, or not valid in this state (RFC 3501 section 3)."""
        text = command_name(name)
        valid = [s for s in _STATE_NAMES if text and getattr(self, f"{s}_{text}", None)]
        if not valid:
            return BadCommand("Unknown command")
        where = _STATE_NAMES.get(self.state, self.state)
        allowed = " or ".join(_STATE_NAMES[s] for s in valid if s != "logout")
        return BadCommand(f"{text} is not valid in the {where} state, only when {allowed}")

    # -- literals -------------------------------------------------------------

    def _stringLiteral(self, size: int) -> Any:
        """A string argument's literal, capped by ``max_astring_literal_size``."""
        limit = self.settings.max_astring_literal_size
        return self._begin_literal(size, limit, super()._stringLiteral)

    def read_string_literal(self, size: int, limit: int) -> Any:
        """A string literal (octets kept as sent) capped at ``limit`` (XKEY PUT's key cap).

        Like :meth:`_stringLiteral`, but with a cap of the caller's instead of
        ``max_astring_literal_size``.
        """

        def start(n: int) -> Any:
            self._string_limit = limit
            try:
                return imap4.IMAP4Server._stringLiteral(self, n)
            finally:
                self._string_limit = None

        return self._begin_literal(size, limit, start)

    def _fileLiteral(self, size: int) -> Any:
        """APPEND's message literal, capped by ``max_literal_size``."""
        return self._begin_literal(size, self.settings.max_literal_size, super()._fileLiteral)

    def _begin_literal(self, size: int, limit: int, start: Callable[[int], Any]) -> Any:
        """Refuse a bad or oversized literal before a continuation request is sent."""
        announced = self._line_literal
        if size < 0 or (announced is not None and announced[0] < 0):
            raise BadCommand("Malformed literal")
        if size > limit:
            raise LiteralTooLarge(f"Literal of {size} octets is over the limit of {limit}")
        # RFC 7888: a non-synchronizing literal's octets follow without a "+".
        self._quiet_continuation = announced is not None and announced[1]
        try:
            result = start(size)
        finally:
            self._quiet_continuation = False
        self._literal_claimed = True
        return result

    def sendContinuationRequest(self, msg: bytes = b"Ready for additional command text") -> None:
        """A ``+`` continuation request, except for a non-synchronizing literal."""
        if not self._quiet_continuation:
            super().sendContinuationRequest(msg)

    # -- STARTTLS (RFC 3501 section 6.2.1) -------------------------------------

    def do_STARTTLS(self, tag: bytes) -> None:
        """Start TLS, discarding anything pipelined behind the command (CVE-2011-0411)."""
        if self.startedTLS or ISSLTransport(self.transport, None) is not None:
            self.send_error(tag, BadCommand("TLS is already active"))
            return
        super().do_STARTTLS(tag)
        if self.startedTLS:
            # Octets after the STARTTLS line were sent before the handshake, in
            # the clear: whoever sent them, they must not run as commands.
            self.clearLineBuffer()
            self._reparse = False

    unauth_STARTTLS = (do_STARTTLS,)

    # -- ID (RFC 2971) ----------------------------------------------------------

    def do_ID(self, tag: bytes, params: list[tuple[bytes, bytes | None]] | None) -> None:
        """Log the client's identification and answer with ours."""
        if params:
            fields = {f.decode("ascii", "replace"): v for f, v in params}
            log.info("Client identified itself: {fields!r}", fields=fields)
        version = __version__.encode("ascii")
        self.sendUntaggedResponse(b'ID ("name" "imap-transcoder" "version" "' + version + b'")')
        self.sendPositiveResponse(tag, b"ID completed")

    def arg_id_params(self, line: bytes | None) -> Any:
        """``id_params_list``: NIL or a parenthesised list of field/value strings."""
        line = (line or b"").lstrip(b" ")
        if line[:3].upper() == b"NIL":
            return None, line[3:]
        if line[:1] != b"(":
            raise BadCommand("ID expects NIL or a parenthesised list")
        return self._id_items(line[1:], [])

    def _id_items(self, rest: bytes, items: list[bytes | None]) -> Any:
        """The rest of an ID list, reading any literal through the literal machinery."""
        while True:
            rest = rest.lstrip(b" ")
            if rest[:1] == b")":
                return self._id_pairs(items), rest[1:]
            if len(items) > 60:
                raise BadCommand("ID takes up to 30 field-value pairs")
            literal = literal_at_end(rest) if rest.rfind(b"{") == 0 else None
            if literal is not None:
                d = self._stringLiteral(literal[0])
                return d.addCallback(lambda got: self._id_items(got[1], [*items, got[0]]))
            try:
                value, rest = split_id_value(rest)
            except IdSyntaxError as e:
                raise BadCommand(str(e)) from None
            items.append(value)

    unauth_ID = (do_ID, arg_id_params)
    auth_ID = unauth_ID
    select_ID = unauth_ID

    @staticmethod
    def _id_pairs(items: list[bytes | None]) -> list[tuple[bytes, bytes | None]]:
        try:
            return id_pairs(items)
        except IdSyntaxError as e:
            raise BadCommand(str(e)) from None
