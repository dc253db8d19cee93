"""FETCH served from the transcoded view: the seam of :mod:`.fetch` filled in.

For each FETCH command the account's policy and keys are read once (in the
key layer's thread pool) and :func:`~transcoder.transcoders.selection.select_transcoder`
decides: policy OFF serves the stored message; policy ALWAYS serves the view
from :class:`~transcoder.imap.view.ViewCache`, transcoding it in a worker
thread on first use.  Every FETCH command reads them anew (commands are told
apart by a count the server keeps, never by the client's tag), so a change
made by another session or process applies from the next FETCH on.  A
message that is all ciphertext already is served as it is
(:mod:`transcoder.mime.ciphertext`).  Failing closed (docs/design.md invariant 3): no usable key
is ``NO [XKEY-NOKEY]``; any transcoding error is ``NO [TRANSCODE-FAILED]``
with the detail in the log -- never the plaintext.  COPY, SEARCH, STORE and
APPEND never come here (invariant 4).

A message file renamed by a flag change while its view is made is found
again (:meth:`~transcoder.store.message.MaildirMessage.open`), in the worker
thread too.  A message another session expunged before its file could be
opened is no transcoding failure: its view is an :class:`ExpungedView`, so
the FETCH leaves that message out, serves the others and ends with
``NO [EXPUNGEISSUED]`` (RFC 2180 section 4.1.2; issue 10, item 6).  Once
opened, the file is read to the end even if it is expunged meanwhile
(RFC 2180 section 4.1.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from transcoder.errors import ClientError
from transcoder.imap.view import SMALL_VIEW, SharedResult, ViewCache, ViewKey
from transcoder.imap.view_stream import StreamedView
from transcoder.keys.view_epochs import ViewInputs, ViewsChanged
from transcoder.mime.ciphertext import is_ciphertext
from transcoder.mime.entity import Entity, parse_shape
from transcoder.mime.protect import parse_top_level
from transcoder.signing.signers import ServerSigning
from transcoder.store.interfaces import IParsedMessage
from transcoder.store.message import MessageExpunged
from transcoder.transcoders.derivation import (
    IRandomSource,
    RandomSource,
    ViewRandomness,
    ViewSecret,
)
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import (
    ISizePredictor,
    TranscodeRequest,
    ViewShape,
    can_sign,
    is_deterministic,
    predicted_layout,
)
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.selection import Selection, select_transcoder

log = Logger()

_COPY_CHUNK = 1024 * 1024
#: Messages up to this size have their view predicted on the reactor thread.
INLINE_PREDICT_LIMIT = 256 * 1024


@dataclass(frozen=True)
class TranscodingConfig:
    """What the server needs to serve transcoded views.

    ``run_blocking(f, *args)`` runs transcoding off the reactor thread (a
    thread pool sized to the CPUs in the service).  With ``view_secret``
    every view's randomness is derived from it and the view's identity
    (:mod:`transcoder.transcoders.derivation`), so views are the same on
    every server sharing the secret; without one, views draw fresh system
    randomness and only the cache keeps them stable.
    """

    registry: TranscoderRegistry
    cache: ViewCache
    obscure_subject: bool = False
    view_secret: ViewSecret | None = None


def likely_small(stored_size: int) -> bool:
    """Whether the view of a ``stored_size``-octet message fits :data:`SMALL_VIEW` (roughly).

    Base64 with CRLF lines makes a view about 1.37 times the message, plus
    its header and the recipients' key material.
    """
    return stored_size * 3 // 2 + 8192 <= SMALL_VIEW


def select_for_account(
    store: Any,
    account: str,
    now: Any,
    registry: TranscoderRegistry,
    epoch: int | None = None,
    signing: ServerSigning | None = None,
) -> Any:
    """Policy and keys of ``account`` from the keystore, and the selection (blocking).

    They are read in one transaction with the account's view epoch; with
    ``epoch`` (the session's, :mod:`transcoder.imap.view_epoch`) another
    epoch raises :class:`~transcoder.keys.view_epochs.ViewsChanged`.

    When the account's views are signed (its SIGN, else the server's
    default) the selection carries the current signing key of its format
    (:class:`~transcoder.signing.signers.ServerSigning`).  The signing keys
    are looked at before the epoch is read -- a key the server has not seen
    yet is first recorded, which moves every epoch -- and again after: a
    rotation in between raises ViewsChanged, so a view is never signed by a
    key other than its epoch's.  Without signing, SIGN fails closed.
    """
    signing_keys = signing.current() if signing is not None else ""
    inputs: ViewInputs = store.view_inputs(account, now)
    if epoch is not None and inputs.epoch != epoch:
        raise ViewsChanged(f"views changed (epoch {epoch} -> {inputs.epoch})")
    selection = select_transcoder(inputs.policy, inputs.keys, registry, now)
    default = signing.default if signing is not None else False
    if selection is None or not inputs.policy.signs(default):
        return selection
    if signing is None:
        raise TranscodeFailed("views of this account are signed, and this server cannot sign")
    if not can_sign(selection.transcoder):
        raise TranscodeFailed(f"transcoder {selection.transcoder.name} cannot sign views")
    signer = signing.signer(selection.transcoder.key_format)
    if signing.fingerprints() != signing_keys:
        raise ViewsChanged("the server's signing key changed")
    return dataclasses.replace(selection, signer=signer)


def transcode_into(
    message: Any,
    selection: Selection,
    request_args: dict[str, Any],
    out: BinaryIO,
    randomness: ViewRandomness,
    random: RandomSource | None = None,
) -> int:
    """Write ``message``'s view into ``out`` (worker thread); its size.

    A message that is all ciphertext already is its own view: it is copied as
    it is, never encrypted twice (:func:`~transcoder.mime.ciphertext.is_ciphertext`).
    Otherwise the message is read once to hash it (its digest is part of the
    view's identity, so every draw depends on it), then transcoded; ``random``
    is the view's source of draws when a prediction made it already.
    """
    with message.open() as source:
        top = parse_top_level(source, message.size)
        if is_ciphertext(top, source):
            source.seek(0)
            copied = 0
            for chunk in iter(lambda: source.read(_COPY_CHUNK), b""):
                out.write(chunk)
                copied += len(chunk)
            return copied
        if random is None:
            random = randomness.for_message(source, message.size)
        source.seek(0)
        request = TranscodeRequest(
            source=source,
            size=message.size,
            keys=selection.keys,
            random_bytes=random,
            top_level=top,
            signer=selection.signer,
            **request_args,
        )
        return selection.transcoder.transcode(request, out).size


class _NoDerivedDraws(Exception):
    """A prediction drew, and there is no view secret: its draws would not be the view's."""


@implementer(IRandomSource)
class _PredictionDraws:
    """The view's own draws for a prediction: the message is hashed only if it draws.

    An S/MIME prediction draws nothing (sizes never depend on randomness), so
    listing costs no hashing; a PGP/MIME one draws its boundary, which must be
    the served view's.  Without a view secret a draw refuses
    (:class:`_NoDerivedDraws`): the view is then made, not predicted.
    """

    def __init__(self, randomness: ViewRandomness, source: BinaryIO, size: int) -> None:
        self._randomness = randomness
        self._source = source
        self._size = size
        self.derived: RandomSource | None = None

    def _derive(self) -> RandomSource:
        if self.derived is None:
            if self._randomness.secret is None:
                raise _NoDerivedDraws("no view secret: a drawn prediction would not hold")
            position = self._source.tell()
            self.derived = self._randomness.for_message(self._source, self._size)
            self._source.seek(position)
        return self.derived

    def draw(self, label: str, size: int) -> bytes:
        """The view's draw ``label`` (the message hashed at the first one)."""
        return self._derive().draw(label, size)

    def __call__(self, size: int) -> bytes:
        """An unlabelled draw of the view's source."""
        return self._derive()(size)


@implementer(IParsedMessage)
class PredictedView:
    """A view's size and structure, known before it is encrypted.

    Serves FETCH items that need no content -- RFC822.SIZE, BODYSTRUCTURE,
    ENVELOPE -- with exactly the numbers the encrypted view will have
    (docs/design.md invariant 2), so listing a mailbox costs no encryption.
    ``shape`` is the transcoder's :class:`~transcoder.transcoders.interfaces.ViewShape`
    (a PGP/MIME view's two parts included); ``random`` the view's draws when
    the prediction drew (its boundary), for the transcoding that follows.
    """

    #: The structure is made from the headers at once (FETCH needs no thread to parse it).
    structure_known = True

    def __init__(self, shape: ViewShape, random: RandomSource | None = None) -> None:
        self.shape = shape
        self.size = shape.size
        self.header = shape.prefix
        self.random = random
        self._entity = parse_shape(shape.prefix, shape.body_size, shape.body_lines, shape.suffix)

    def open(self) -> BinaryIO:
        """Not available: FETCH asks for a predicted view only when it needs no content."""
        raise TypeError("a predicted view has no content; fetch the view itself")

    def entity(self) -> Entity:
        """The view's MIME structure, as it will be, with every part's extent."""
        return self._entity


def predict_view(
    message: Any, selection: Selection, request_args: dict[str, Any], randomness: ViewRandomness
) -> Any:
    """The :class:`PredictedView` of ``message`` (worker thread); itself if all ciphertext;
    None when it cannot be predicted (a drawn prediction without a view secret).

    The same decision as :func:`transcode_into`'s, so the size is that of what
    is served, and the same draws: the message is hashed only if the
    prediction draws (:class:`_PredictionDraws`).
    """
    with message.open() as source:
        top = parse_top_level(source, message.size)
        if is_ciphertext(top, source):
            return message
        source.seek(0)
        draws = _PredictionDraws(randomness, source, message.size)
        request = TranscodeRequest(
            source=source,
            size=message.size,
            keys=selection.keys,
            random_bytes=draws,
            top_level=top,
            signer=selection.signer,
            **request_args,
        )
        try:
            shape = predicted_layout(selection.transcoder, request)
        except _NoDerivedDraws:
            return None
        return PredictedView(shape, draws.derived)


def _streamed(predicted: Any, cache: ViewCache, key: ViewKey, transcode: Any) -> Any:
    """The :class:`StreamedView` of a prediction (a message served as it is stays itself).

    ``transcode(random)`` is the view's transcoding with the prediction's draws.
    """
    if not isinstance(predicted, PredictedView):
        return predicted
    size = predicted.size
    make = transcode(predicted.random)
    return StreamedView(predicted.shape, lambda: cache.stream(key, make, size), predicted.entity())


@implementer(IParsedMessage)
class ExpungedView:
    """The view of a message expunged by another session before it could be read.

    Holds nothing of the message: its size, structure and content all raise
    :class:`~transcoder.store.message.MessageExpunged` (a FileNotFoundError),
    which FETCH answers by leaving the message out and ending with
    ``NO [EXPUNGEISSUED]`` once the others are served (RFC 2180 section 4.1.2).
    """

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def _gone(self) -> MessageExpunged:
        return MessageExpunged(f"message {self.uid} was expunged")

    @property
    def size(self) -> int:
        """Not available: raises MessageExpunged."""
        raise self._gone()

    def open(self) -> BinaryIO:
        """Not available: raises MessageExpunged."""
        raise self._gone()

    def entity(self) -> Entity:
        """Not available: raises MessageExpunged."""
        raise self._gone()


class TranscodingMixin:
    """Fills :meth:`FetchMixin.fetch_view` with the account's transcoded view."""

    # Set by the factory; attributes of Twisted's and the other mixins, for the type checker.
    transcoding: TranscodingConfig | None = None
    keys: Any
    account: Any
    mbox: Any
    stored_message: Callable[[Any], defer.Deferred[Any]]  # FetchMixin's
    #: Counts the commands dispatched on this connection: the selection is read
    #: once per command, never reused by a later one (whatever its tag).
    _command_serial = 0
    _selection_for: tuple[int, SharedResult] | None = None
    #: The view-key fields of the last selection: (selection, fingerprints, name,
    #: settings and secret identifier, the view identity short of the message digest).
    _key_fields: tuple[Selection, str, str, str, ViewRandomness] | None = None

    def dispatchCommand(self, tag: bytes, cmd: bytes, rest: bytes | None, uid: Any = None) -> Any:
        """Start a new command: a FETCH from here on reads the policy and keys afresh.

        Policy and keys may have changed since the last command -- through XKEY
        in another session or ``transcoder-admin`` in another process -- and
        must apply from the next FETCH on.  Only a count the server keeps
        tells commands apart: a tag is the client's to choose and reuse.
        """
        self._command_serial += 1
        return super().dispatchCommand(tag, cmd, rest, uid)  # type: ignore[misc]

    def keys_changed(self, account: str) -> None:
        """XKEY changed ``account``'s keys or policy: its cached views are obsolete."""
        if self.transcoding is not None:
            self.transcoding.cache.invalidate_account(account)

    def fetch_selection(self) -> defer.Deferred[Selection | None]:
        """This command's transcoding selection; None when FETCH serves stored octets as they are.

        A seam for stores that can serve a policy-OFF FETCH faster themselves
        (the backend front relays its backend's answer).  Read once per
        command, shared with :meth:`fetch_view`; a failure (keystore down)
        errbacks, and the caller must then take the fail-closed path.
        """
        address = getattr(self.account, "address", None)
        if self.transcoding is None or getattr(self, "keys", None) is None or address is None:
            return defer.succeed(None)
        return self._selection(address).fork()

    def fetch_view(self, message: Any, content: bool = True) -> defer.Deferred[Any]:
        """The transcoded view of ``message`` under policy ALWAYS, else the stored message."""
        address = getattr(self.account, "address", None)
        if self.transcoding is None or getattr(self, "keys", None) is None or address is None:
            return super().fetch_view(message, content)  # type: ignore[misc]
        shared = self._selection(address)
        if shared.succeeded:
            # Every message of a FETCH after the first: the decision is known,
            # so a cached view is served without another round of Deferreds.
            d = defer.maybeDeferred(self._view_for, shared.result, message, address, content)
        else:
            d = shared.fork().addCallback(self._view_for, message, address, content)
        return d.addErrback(self._fail_closed, message)

    def _selection(self, address: str) -> SharedResult:
        """The selection for this FETCH command, read once per command."""
        serial = self._command_serial
        if self._selection_for is None or self._selection_for[0] != serial:
            now = self.keys.now()
            registry = self.transcoding.registry  # type: ignore[union-attr]
            epoch = getattr(self, "view_epoch", None)
            shared = self.keys.store.run(
                select_for_account,
                self.keys.store.store,
                address,
                now,
                registry,
                epoch,
                getattr(self.keys, "signing", None),
            )
            self._selection_for = (serial, SharedResult(shared))
        return self._selection_for[1]

    def _view_for(
        self, selection: Selection | None, message: Any, address: str, content: bool
    ) -> Any:
        if selection is None:
            return self.stored_message(message)
        stored = IParsedMessage(message, None)
        if stored is None:  # a foreign message object: spooled first
            return self.stored_message(message).addCallback(
                self._cached_view, message, selection, address, content
            )
        return self._cached_view(stored, message, selection, address, content)

    def _view_key(self, selection: Selection, address: str, uid: int) -> ViewKey:
        """The view-cache key of message ``uid`` (the per-selection fields computed once)."""
        return ViewKey(address, self.mbox.getUIDValidity(), uid, *self._view_fields(selection)[1:4])

    def _view_fields(self, selection: Selection) -> tuple[Selection, str, str, str, ViewRandomness]:
        """The per-selection parts of view keys and view identities, computed once.

        The secret's identifier is part of the cache key: views made under
        another secret (before a rotation) are never served.
        """
        fields = self._key_fields
        if fields is None or fields[0] is not selection:
            config: TranscodingConfig = self.transcoding  # type: ignore[assignment]
            obscure = "|obscure-subject" if config.obscure_subject else ""
            transcoder = selection.transcoder
            settings = transcoder.settings_id + obscure
            secret = config.view_secret
            fingerprints = tuple(sorted(k.fingerprint for k in selection.keys))
            signer = selection.signer.fingerprint if selection.signer is not None else ""
            randomness = ViewRandomness(secret, fingerprints, transcoder.name, settings, signer)
            if signer:  # a signed view is another view (ViewSigner): another cache entry
                settings += "|signed=" + signer
            if secret is not None:
                settings += "|secret=" + secret.identifier
            fields = (selection, selection.key_id, transcoder.name, settings, randomness)
            self._key_fields = fields
        return fields

    def _cached_view(
        self, stored: Any, message: Any, selection: Selection, address: str, content: bool
    ) -> defer.Deferred[Any]:
        config: TranscodingConfig = self.transcoding  # type: ignore[assignment]
        key = self._view_key(selection, address, message.getUID())
        cached = config.cache.lookup(key)
        if cached is not None:
            return defer.succeed(cached)
        request_args = {"now": self.keys.now(), "obscure_subject": config.obscure_subject}
        randomness = self._view_fields(selection)[4]
        if not content and ISizePredictor.providedBy(selection.transcoder):
            # Size and structure only: computed from the headers, no encryption.
            # A small message's header is read here: a thread hop would cost more.
            if stored.size <= INLINE_PREDICT_LIMIT and selection.signer is None:
                predicted = defer.maybeDeferred(
                    predict_view, stored, selection, request_args, randomness
                )
            else:
                predicted = config.cache.run_blocking(
                    predict_view, stored, selection, request_args, randomness
                )
            return predicted.addCallback(
                self._predicted_or_made, stored, selection, key, request_args
            )
        return self._made_view(stored, selection, key, request_args)

    def _predicted_or_made(
        self,
        predicted: Any,
        stored: Any,
        selection: Selection,
        key: ViewKey,
        request_args: dict[str, Any],
    ) -> Any:
        """The prediction, or the view itself when there could be none."""
        if predicted is not None:
            return predicted
        return self._made_view(stored, selection, key, request_args)

    def _made_view(
        self, stored: Any, selection: Selection, key: ViewKey, request_args: dict[str, Any]
    ) -> defer.Deferred[Any]:
        """The view with its content: shared with a FETCH making it, streamed, or made."""
        config: TranscodingConfig = self.transcoding  # type: ignore[assignment]
        pending = config.cache.pending(key)
        if pending is not None:  # another FETCH is making it: shared
            return pending
        randomness = self._view_fields(selection)[4]

        def transcode_with(random: RandomSource | None) -> Callable[[BinaryIO], int]:
            def transcode(out: BinaryIO) -> int:
                return transcode_into(stored, selection, request_args, out, randomness, random)

            return transcode

        recomputable = self._recomputable(selection)
        # A signed view is never made on the reactor thread: signing costs
        # milliseconds (RSA) and its prediction reads the whole message.
        small = likely_small(stored.size) and selection.signer is None
        if (
            recomputable
            and not small
            and config.cache.streams is not None
            and ISizePredictor.providedBy(selection.transcoder)
        ):
            # Sent as it is encrypted: size and structure are known in advance.
            predicted = config.cache.run_blocking(
                predict_view, stored, selection, request_args, randomness
            )
            return predicted.addCallback(self._stream_or_make, key, transcode_with)
        return config.cache.get(key, transcode_with(None), durable=not recomputable, small=small)

    def _stream_or_make(self, predicted: Any, key: ViewKey, transcode_with: Any) -> Any:
        config: TranscodingConfig = self.transcoding  # type: ignore[assignment]
        if predicted is None:  # not predictable after all: made whole (recomputable)
            return config.cache.get(key, transcode_with(None), durable=False, small=False)
        return _streamed(predicted, config.cache, key, transcode_with)

    def _recomputable(self, selection: Selection) -> bool:
        """Whether the selection's views are a pure function of their inputs.

        Only then may a copy be dropped (docs/design.md invariant 1): the
        transcoder draws every random octet from the request and the draws
        are derived from the view secret.
        """
        config: TranscodingConfig = self.transcoding  # type: ignore[assignment]
        return config.view_secret is not None and is_deterministic(selection.transcoder)

    def _fail_closed(self, failure: Any, message: Any) -> Any:
        """Client errors pass through (with their code); anything else becomes TRANSCODE-FAILED.

        A message expunged meanwhile is no failure: it gets an :class:`ExpungedView`.
        """
        error = failure.value
        if isinstance(error, MessageExpunged):
            return ExpungedView(message.getUID())
        if isinstance(error, TranscodeFailed):
            log.error("transcoding failed: {detail}", detail=error.detail)
            return failure
        if isinstance(error, ClientError):
            return failure
        log.failure("transcoding failed", failure)
        raise TranscodeFailed(f"{type(error).__name__}: {error}")
