"""CONVERT (RFC 5259): CONVERSIONS, CONVERT and UID CONVERT for TranscodingIMAP4Server.

The conversions themselves are sans-IO (:mod:`transcoder.convert`); this
mixin moves bytes:

* ``CONVERT`` is advertised in CAPABILITY.  ``CONVERSIONS src dst``
  (authenticated and selected states) answers one ``* CONVERSION`` per
  conversion the user can use: the encryption targets only when the user
  has a usable key of that format (read from the keystore per command).
* ``CONVERT`` / ``UID CONVERT`` (selected state) work on what FETCH serves:
  the message's view under ``MODE ALWAYS`` (so sections and octets are the
  view's, and no plaintext conversion can reveal the stored body: docs/design.md,
  CONVERT), the stored message otherwise.  A view that cannot be made fails
  the command closed (``NO [TRANSCODE-FAILED]``), like FETCH.
* Each message is answered ``* n CONVERTED (TAG "t") (...)`` with its items
  in the order asked, ``UID`` first (section 8.1); a conversion that fails
  puts the RFC's ``(ERROR "text" BADPARAMETERS ...)`` phrase in place of
  each of its items, never the plaintext.  The command ends ``OK`` when a
  conversion succeeded, ``NO`` when all failed (section 9).
* Never sets ``\\Seen`` (section 6); no ``EXPUNGE`` while a ``CONVERT``
  answers (``UID CONVERT`` may carry them).  A message expunged by another
  session is left out and the command ends ``NO [EXPUNGEISSUED]``, as FETCH.
* Conversions run off the reactor thread (the view cache's workers); the
  session keeps the last few converted parts (RFC 5259 section 8.5), so
  ``BINARY.SIZE`` and later ``BINARY[...]<o.n>`` slices are the same octets.
  With a view secret they are the same in every session too (derived
  randomness: :class:`~transcoder.convert.model.ConversionRandomness`).
* Encryption conversions are logged (who, which message and part, the
  target, the size or why it failed), as RFC 5259 section 11 asks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.mail import imap4

from transcoder.cms import CmsSettings
from transcoder.convert import (
    ConversionContext,
    ConversionFailed,
    ConversionRandomness,
    ConversionRegistry,
    ConversionRequest,
    ConvertedPart,
)
from transcoder.convert.message import MessageConversions, convert_message
from transcoder.convert.model import spool
from transcoder.convert.syntax import (
    ConvertArguments,
    ConvertItem,
    conversion_response,
    error_phrase,
    mimetype_list,
    parse_conversions,
    parse_convert,
    quoted,
)
from transcoder.errors import ClientError, ServerError, TranscoderError
from transcoder.imap.fetch import (
    ExpungeIssued,
    ResponsePieces,
    named_count,
    sequence_set_argument,
)
from transcoder.imap.fetch_binary import BinaryContent
from transcoder.imap.fetch_stream import ResponseStream
from transcoder.imap.structure import body_structure

log = Logger()

#: Converted parts a session keeps (RFC 5259 section 8.5: at least 2).
SESSION_CACHE = 4
#: Messages one CONVERT converts at most (``NO [MAXCONVERTMESSAGES n]`` beyond, section 8.5):
#: each conversion encrypts or recodes a part, which a listing of a mailbox has no need of.
MAX_MESSAGES = 100
#: Distinct body parts converted per message at most (``NO [MAXCONVERTPARTS n]`` beyond).
MAX_PARTS = 16
#: Items whose answer needs the part converted.
_CONVERTING = frozenset({"BINARY", "BINARY.SIZE", "BODYPARTSTRUCTURE"})


class AllConversionsFailed(ClientError):
    """All conversions failed."""

    code = None


class TooManyMessages(ClientError):
    """The command names more messages than one CONVERT converts (RFC 5259 section 8.5)."""

    def __init__(self, text: str, limit: int) -> None:
        super().__init__(text, code=f"MAXCONVERTMESSAGES {limit}")


class TooManyParts(ClientError):
    """The command names more body parts than one CONVERT converts (RFC 5259 section 8.5)."""

    def __init__(self, text: str, limit: int) -> None:
        super().__init__(text, code=f"MAXCONVERTPARTS {limit}")


def _keys_of(store: Any, address: str, now: Any) -> tuple[Any, ...]:
    """The account's keys, as the keystore reports them (keystore thread)."""
    return tuple(store.view_inputs(address, now).keys)


class ConvertMixin:
    """CONVERSIONS, CONVERT and UID CONVERT (see the module docstring)."""

    # Attributes of Twisted's server and the other mixins (for the type checker only).
    mbox: Any
    account: Any
    keys: Any
    transcoding: Any
    transport: Any
    current_command: bytes | None
    fetch_view: Callable[..., defer.Deferred[Any]]
    write_response: Callable[..., defer.Deferred[Any]]
    respond_streamed: Callable[..., None]
    send_error: Callable[[bytes | None, Any], None]
    sendPositiveResponse: Callable[..., None]
    _converted: OrderedDict[tuple[Any, ...], ConvertedPart] | None = None
    _conversion_registry: ConversionRegistry | None = None

    def capabilities(self) -> dict[bytes, Any]:
        """Add ``CONVERT`` (RFC 5259 section 3.1)."""
        caps: dict[bytes, Any] = super().capabilities()  # type: ignore[misc]
        caps[b"CONVERT"] = None
        return caps

    # -- what the conversions need ---------------------------------------------------

    def conversion_registry(self) -> ConversionRegistry:
        """The converters, the S/MIME one with the server's S/MIME settings."""
        if self._conversion_registry is None:
            cms = CmsSettings()
            config = self.transcoding
            smime = config.registry.get("smime") if config is not None else None
            if smime is not None and isinstance(getattr(smime, "settings", None), CmsSettings):
                cms = smime.settings
            self._conversion_registry = ConversionRegistry(cms=cms)
        return self._conversion_registry

    def _now(self) -> Any:
        from transcoder.keys.async_store import clock_now

        return self.keys.now() if self.keys is not None else clock_now(self._clock())

    def _clock(self) -> Any:
        return getattr(self, "clock", None)

    def _user_keys(self) -> defer.Deferred[tuple[Any, ...]]:
        """The logged-in account's keys (none without a keystore or an address)."""
        address = getattr(self.account, "address", None)
        if self.keys is None or address is None:
            return defer.succeed(())
        return self.keys.store.run(_keys_of, self.keys.store.store, address, self.keys.now())

    def _context(self, keys: tuple[Any, ...]) -> ConversionContext:
        """A context for listing (no message, no draws)."""
        return ConversionContext(
            keys,
            self._now(),
            ConversionRandomness(None, bytes(32), ""),
            self.conversion_registry().cms,
        )

    def _run_blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``f`` off the reactor thread (the view cache's workers when there are some)."""
        config = self.transcoding
        if config is not None:
            return config.cache.run_blocking(f, *args)
        return threads.deferToThread(f, *args)

    # -- CONVERSIONS (RFC 5259 section 5) --------------------------------------------

    def arg_conversions(self, line: bytes | None) -> tuple[tuple[str, str], bytes]:
        """The two ``mime-type-req``: the rest of the line."""
        return parse_conversions(line or b""), b""

    def do_CONVERSIONS(self, tag: bytes, pair: tuple[str, str]) -> None:
        """``* CONVERSION`` for each conversion from ``pair[0]`` to ``pair[1]``, then OK."""
        self_: Any = self

        def answer(keys: tuple[Any, ...]) -> None:
            for line in self.conversion_registry().listing(*pair, self._context(keys)):
                self_.sendUntaggedResponse(conversion_response(line))
            self_.sendPositiveResponse(tag, b"CONVERSIONS completed")

        d = self._user_keys().addCallback(answer)
        d.addErrback(lambda failure: self.send_error(tag, _as_error(failure)))

    auth_CONVERSIONS = (do_CONVERSIONS, arg_conversions)
    select_CONVERSIONS = auth_CONVERSIONS

    # -- CONVERT, UID CONVERT (RFC 5259 section 6) -----------------------------------

    def arg_sequence_set(self, line: bytes | None) -> tuple[imap4.MessageSet, bytes]:
        """``sequence-set`` up to the next space."""
        return sequence_set_argument(line)

    def arg_convert(self, line: bytes | None) -> tuple[ConvertArguments, bytes]:
        """``convert-params`` and the items: the rest of the line."""
        return parse_convert(line or b""), b""

    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> Any:
        """UID CONVERT besides the other UID commands."""
        if command.upper() == b"CONVERT":
            return self.dispatchCommand(tag, b"CONVERT", line, uid=1)  # type: ignore[attr-defined]
        return super().do_UID(tag, command, line)  # type: ignore[misc]

    def send_mailbox_updates(self, allow_expunge: bool = True) -> None:
        """No EXPUNGE while CONVERT answers (RFC 5259 section 6; UID CONVERT may)."""
        if self.current_command == b"CONVERT":
            allow_expunge = False
        super().send_mailbox_updates(allow_expunge)  # type: ignore[misc]

    def do_CONVERT(
        self, tag: bytes, messages: imap4.MessageSet, args: ConvertArguments, uid: int = 0
    ) -> None:
        """Answer CONVERT / UID CONVERT; later commands wait for the answer."""
        self_: Any = self
        parts = {i.part for i in args.items if i.name in _CONVERTING}
        if len(parts) > MAX_PARTS:
            self.send_error(tag, TooManyParts(f"At most {MAX_PARTS} body parts at once", MAX_PARTS))
            return
        if named_count(self.mbox, messages, bool(uid)) > MAX_MESSAGES:
            limit = MAX_MESSAGES
            self.send_error(tag, TooManyMessages(f"At most {limit} messages at once", limit))
            return

        def served(stream: ResponseStream) -> defer.Deferred[tuple[bool, int, int]]:
            d = defer.maybeDeferred(self.mbox.fetch, messages, uid=uid)
            return d.addCallback(self._convert_found, tag, messages, args, bool(uid), stream)

        def done(outcome: tuple[bool, int, int]) -> None:
            vanished, succeeded, failed = outcome
            if vanished:
                self.send_error(tag, ExpungeIssued())
            elif failed and not succeeded:
                self.send_error(tag, AllConversionsFailed("All conversions failed"))
            elif failed:
                self_.sendPositiveResponse(tag, b"CONVERT completed, some conversions failed")
            else:
                self_.sendPositiveResponse(tag, b"CONVERT completed")

        self.respond_streamed(tag, b"CONVERT", served, done)

    select_CONVERT = (do_CONVERT, arg_sequence_set, arg_convert)

    @defer.inlineCallbacks
    def _convert_found(
        self,
        found: Any,
        tag: bytes,
        messages: Any,
        args: ConvertArguments,
        uid: bool,
        stream: ResponseStream,
    ) -> Any:
        """Convert and answer each message found; (vanished, successes, failures)."""
        found = list(found)
        vanished = len(found) < named_count(self.mbox, messages, uid)
        items = [i for i in args.items if i.name != "UID"]
        if uid or len(items) < len(args.items):
            items.insert(0, ConvertItem("UID"))  # RFC 5259 section 8.1: UID first
        keys = yield self._user_keys()
        succeeded = failed = 0
        for seq, message in found:
            try:
                view = yield self.fetch_view(message, True)
                result = yield self._convert_message(message, view, args.request, items, keys)
            except FileNotFoundError:  # expunged by another session meanwhile
                vanished = True
                continue
            response, ok, bad = self._converted_response(
                seq, tag, message, args.request, items, result
            )
            succeeded, failed = succeeded + ok, failed + bad
            yield self.write_response(response, stream)
            yield stream.between_messages()
        return vanished, succeeded, failed

    @defer.inlineCallbacks
    def _convert_message(
        self,
        message: Any,
        view: Any,
        request: ConversionRequest,
        items: list[ConvertItem],
        keys: tuple[Any, ...],
    ) -> Any:
        """Convert the parts ``items`` name (cached ones reused), off the reactor thread."""
        size = view.size  # raises MessageExpunged (a FileNotFoundError) for a gone message
        fp = view.open()
        if hasattr(fp, "read_between"):  # a view sent as it is encrypted: spool it whole
            fp = yield _spooled(fp, size)
        fingerprints = tuple(sorted(k.fingerprint for k in keys))
        base = (self.mbox.getUIDValidity(), message.getUID(), size, request.identity())
        cached = {}
        wanted = []
        for item in items:
            if item.name in _CONVERTING and item.part not in cached:
                key = (*base, item.part, fingerprints)
                hit = self._session_cache().get(key)
                if hit is not None:
                    self._session_cache().move_to_end(key)
                    cached[item.part] = hit
                elif item.part not in wanted:
                    wanted.append(item.part)
        headers = [(i.part, i.text or "") for i in items if i.name == "BODY"]
        structures = {i.part for i in items if i.name == "BODYPARTSTRUCTURE"}
        try:
            result = yield self._run_blocking(
                _convert_view,
                fp,
                view,
                structures,
                cached,
                self.conversion_registry(),
                request,
                ConversionContext(keys, self._now(), _NO_DRAWS, self.conversion_registry().cms),
                self._secret(),
                wanted,
                [i.part for i in items if i.name == "AVAILABLECONVERSIONS"],
                headers,
            )
        finally:
            fp.close()
        for part, converted in result.parts.items():
            if isinstance(converted, ConvertedPart):
                self._remember((*base, part, fingerprints), converted)
            self._log_conversion(message, part, request, converted)
        result.parts.update(cached)
        return result

    def _secret(self) -> Any:
        config = self.transcoding
        return getattr(config, "view_secret", None) if config is not None else None

    def _session_cache(self) -> OrderedDict[tuple[Any, ...], ConvertedPart]:
        if self._converted is None:
            self._converted = OrderedDict()
        return self._converted

    def _remember(self, key: tuple[Any, ...], converted: ConvertedPart) -> None:
        cache = self._session_cache()
        cache[key] = converted
        while len(cache) > SESSION_CACHE:
            cache.popitem(last=False)

    def _log_conversion(
        self,
        message: Any,
        part: tuple[int, ...],
        request: ConversionRequest,
        converted: ConvertedPart | ConversionFailed,
    ) -> None:
        """Log encryption conversions and every failure (RFC 5259 section 11)."""
        encrypting = isinstance(converted, ConvertedPart) and converted.encrypted
        if not encrypting and not isinstance(converted, ConversionFailed):
            return
        where = {
            "who": getattr(self.account, "address", "?"),
            "uid": message.getUID(),
            "section": ".".join(map(str, part)) or "(message)",
            "target": request.target or "NIL",
        }
        what = "CONVERT of {who} message {uid} part {section} to {target}"
        if isinstance(converted, ConversionFailed):
            if converted.detail:  # the server's fault: the detail stays in the log
                log.error(what + " broke: {detail}", detail=converted.detail, **where)
            else:
                log.info(what + " failed: {why}", why=converted.text, **where)
            return
        log.info(what + ": {size} octets encrypted", size=converted.size, **where)

    def _converted_response(
        self,
        seq: int,
        tag: bytes,
        message: Any,
        request: ConversionRequest,
        items: list[ConvertItem],
        result: MessageConversions,
    ) -> tuple[ResponsePieces, int, int]:
        """``* seq CONVERTED (TAG "tag") (...)`` and how many items succeeded and failed;
        the converted octets stay in their files until written."""
        response = ResponsePieces(None)
        response.atom(
            b"* %d CONVERTED (TAG " % seq + quoted(tag.decode("ascii", "replace")) + b") ("
        )
        succeeded = failed = 0
        for index, item in enumerate(items):
            label = (b" " if index else b"") + item.label()
            value = _item_value(item, message, request, result)
            if item.name != "UID":
                if isinstance(value, ConversionFailed):
                    failed += 1
                else:
                    succeeded += 1
            if isinstance(value, ConversionFailed):
                response.atom(label + b" " + error_phrase(value))
            elif isinstance(value, ConvertedPart):
                content = BinaryContent(value.size, value.has_nul, value.file, value.header_size)
                response.binary(label, content, item.partial)
            else:
                response.atom(label + b" " + value)
        response.atom(b")\r\n")
        return response, succeeded, failed


#: A context's randomness before the message is known (the worker fills it in).
_NO_DRAWS = ConversionRandomness(None, bytes(32), "")


def _literal(data: bytes) -> bytes:
    """``{n}`` and the octets of a converted header."""
    return b"{%d}\r\n" % len(data) + data


def _item_value(
    item: ConvertItem, message: Any, request: ConversionRequest, result: MessageConversions
) -> bytes | ConversionFailed | ConvertedPart:
    """The response value of one item (a ConvertedPart for ``BINARY[...]``: its body)."""
    if item.name == "UID":
        return b"%d" % message.getUID()
    if item.name == "BODY":
        header = result.headers[(item.part, item.text or "")]
        return header if isinstance(header, ConversionFailed) else _literal(header)
    if item.name == "AVAILABLECONVERSIONS":
        return _available(item, result)
    converted = result.parts[item.part]
    if isinstance(converted, ConversionFailed):
        return converted
    if item.name == "BINARY.SIZE":
        return b"%d" % converted.size
    if item.name == "BODYPARTSTRUCTURE":
        return body_structure(converted.structure(), True)
    return converted


def _available(item: ConvertItem, result: MessageConversions) -> bytes | ConversionFailed:
    """AVAILABLECONVERSIONS (RFC 5259 section 8.4), as the worker found it."""
    found = result.available[item.part]
    return found if isinstance(found, ConversionFailed) else mimetype_list(found)


def _convert_view(
    fp: BinaryIO,
    view: Any,
    structures: set[tuple[int, ...]],
    cached: dict[tuple[int, ...], ConvertedPart],
    *args: Any,
) -> MessageConversions:
    """:func:`convert_message` of ``view``, and the structure of the converted ``structures``
    parts (worker thread: a large tree is parsed here, never on the reactor)."""
    result = convert_message(fp, view.entity(), view.size, *args)
    for part in structures:
        converted = result.parts.get(part, cached.get(part))
        if isinstance(converted, ConvertedPart):
            converted.structure()
    return result


def _spooled(fp: Any, size: int) -> defer.Deferred[BinaryIO]:
    """A view being streamed (a :mod:`~transcoder.imap.view_stream` file), copied whole
    into a spooled temporary file as it comes (never whole in memory)."""

    @defer.inlineCallbacks
    def copy() -> Any:
        copied = spool()
        try:
            position = 0
            while position < size:
                piece = yield fp.read_between(position, size)
                copied.write(piece)
                position += len(piece)
        except BaseException:
            copied.close()
            raise
        finally:
            fp.close()
        return copied

    return copy()


def _as_error(failure: Any) -> TranscoderError:
    """A command's failure as what the client is told (anything unexpected: SERVERBUG, logged)."""
    error = failure.value
    if isinstance(error, TranscoderError):
        return error
    log.failure("CONVERT failed", failure)
    return ServerError("CONVERT failed")


__all__ = [
    "MAX_MESSAGES",
    "MAX_PARTS",
    "SESSION_CACHE",
    "AllConversionsFailed",
    "ConvertMixin",
    "TooManyMessages",
    "TooManyParts",
]
