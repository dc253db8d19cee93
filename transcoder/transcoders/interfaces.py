"""What a transcoder is: :class:`ITranscoder` and the values it takes and returns.

A transcoder is a pure, synchronous, blocking function from a stored message
(and the user's keys) to the transcoded view (docs/design.md, "The transcoded
view").  The server runs it in a worker thread; it gets the time and its
randomness from the request, never from module globals, so tests can pin
both.  Its randomness comes as labelled draws (:meth:`TranscodeRequest.draw`)
which the server derives from the view's identity and its view secret
(:mod:`transcoder.transcoders.derivation`): a transcoder that takes every
random octet from there produces the same view on every server, every time.
Third-party transcoders implement the same interface and register
through the ``transcoder.transcoders`` entry-point group
(:mod:`transcoder.transcoders.registry`); :mod:`transcoder.testing` checks
them.

Two spellings of one contract: :class:`ITranscoder` is the zope.interface
declaration (``@implementer``, ``verifyObject``, ``providedBy``);
:class:`Transcoder` mirrors it as a :class:`typing.Protocol` so type hints
and mypy can check callers (mypy does not understand zope interfaces).

No twisted import here.
"""

# zope.interface declares methods without ``self``:
# ruff: noqa: N805

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, cast

from zope.interface import Attribute, Interface

from transcoder.keys.model import KeyFormat, StoredKey, require_aware
from transcoder.mime.entity import Entity
from transcoder.transcoders.derivation import (
    CallableRandom,
    IRandomSource,
    RandomSource,
)


@dataclass(frozen=True)
class ViewSigner:
    """The server's signing key, handed to a transcoder to sign a view (issue 16).

    The server passes one as :attr:`TranscodeRequest.signer` when the
    account's policy says ``SIGN ON`` (``XKEY POLICY SIGN ON``, or the
    server's ``--sign-views`` default); ``None`` there means an unsigned
    view.  It is always the *current* signing key of the view's format from
    ``DIR/server-keys/`` (a retired signing key is never handed out), loaded
    by :mod:`transcoder.signing.signers` and cached per fingerprint.

    * ``format``: the :class:`~transcoder.keys.model.KeyFormat` of the view.
    * ``fingerprint``: the server key's fingerprint as ``XKEY SERVER`` shows
      it -- SHA-256 of the signing certificate's DER (S/MIME), the primary
      key's v4 fingerprint (OpenPGP).  Part of the view's identity
      (:class:`~transcoder.transcoders.derivation.ViewIdentity` ``signer``)
      and of its cache key, so signed views are byte-stable and a new
      signing key names new views.
    * ``public``: S/MIME: the signing certificate's DER; OpenPGP: the
      armored public key exactly as ``XKEY SERVER`` publishes it.
    * ``secret``: the private key file's octets: PKCS#8 PEM (S/MIME), the
      armored ``gpg --export-secret-keys`` of the whole key (OpenPGP).
    * ``signing_subkey``: OpenPGP only, the fingerprint of the signing
      subkey to sign with (``ServerKey.subkeys[1]``); ``""`` for S/MIME.
    * ``private_key``: the key, parsed once by the loader: S/MIME a
      ``cryptography`` RSA or EC private key; OpenPGP whatever
      ``transcoder.openpgp.sign.signing_key_from_secret(secret,
      signing_subkey)`` returns (a ``SigningKey``).  Not compared or hashed.

    A transcoder that signs declares ``signs = True`` (see
    :func:`can_sign`); the server never hands a signer to one that does not
    (the FETCH fails closed instead).  Signing must be deterministic (RSA
    PKCS#1 v1.5, Ed25519, ECDSA with RFC 6979 nonces) and draw nothing that
    is not from the request's draws, or the view would change between
    FETCHes.
    """

    format: KeyFormat
    fingerprint: str
    public: bytes
    secret: bytes = field(repr=False)
    signing_subkey: str = ""
    private_key: Any = field(default=None, repr=False, compare=False, hash=False)


@dataclass(frozen=True)
class TranscodeRequest:
    """One message to transcode for one user.

    ``source`` is the stored message (CRLF line ends) of ``size`` octets; a
    transcoder may seek and read it but never writes or closes it.
    ``keys`` are the user's active keys of the transcoder's format, newest
    first.  ``now`` (timezone-aware) is the moment to judge key validity at.
    ``random_bytes`` is the only source of randomness a transcoder may use:
    an :class:`~transcoder.transcoders.derivation.IRandomSource`, drawn from
    by purpose with :meth:`draw` (``random_bytes(n)`` also works, for
    transcoders written before labelled draws; a plain ``n -> bytes``
    function passed here is wrapped in a
    :class:`~transcoder.transcoders.derivation.CallableRandom`).  The server
    passes draws derived from the view's identity, so a transcoder whose
    every random octet comes from here serves the same octets on every
    server and after every restart.  ``obscure_subject`` asks for RFC 9788
    ``hcp_baseline`` on the outer header.
    """

    source: BinaryIO
    size: int
    keys: tuple[StoredKey, ...]
    now: datetime
    random_bytes: RandomSource | Callable[[int], bytes]
    obscure_subject: bool = False
    #: ``parse_top_level(source, size)`` when the server has parsed it already
    #: (it does, to tell ciphertext apart); a transcoder may use it instead of
    #: parsing the header again.
    top_level: Entity | None = None
    #: The server's signing key when the view must be signed (``XKEY POLICY
    #: SIGN ON``), else ``None``: see :class:`ViewSigner`.
    signer: ViewSigner | None = None

    def __post_init__(self) -> None:
        require_aware(self.now)
        if self.size < 0:
            raise ValueError("size must not be negative")
        if not isinstance(self.keys, tuple):
            object.__setattr__(self, "keys", tuple(self.keys))
        if not IRandomSource.providedBy(self.random_bytes):
            object.__setattr__(self, "random_bytes", CallableRandom(self.random_bytes))

    def draw(self, label: str, size: int) -> bytes:
        """``size`` octets for the purpose ``label`` (see :meth:`IRandomSource.draw`).

        Checked to be exactly ``size`` octets (ValueError otherwise).
        """
        value = cast(RandomSource, self.random_bytes).draw(label, size)
        if len(value) != size:
            raise ValueError(f"random source gave {len(value)} octets for {label}, {size} wanted")
        return value


@dataclass(frozen=True)
class TranscodeResult:
    """What :meth:`ITranscoder.transcode` wrote: ``size`` octets of ``media_type``."""

    size: int
    media_type: str


class ITranscoder(Interface):
    """Turns a stored message into the encrypted view one user is served.

    Implementations must be safe to call from several worker threads at
    once: keep per-call state in locals, not on the instance.

    An optional attribute, not declared here so that transcoders written
    before it still verify: ``deterministic = True`` says that every random
    octet of the output comes from the request's draws, so the same request
    always gives the same octets.  The server then keeps views as a cache it
    may drop and recompute (and streams them on first FETCH); without it
    (:func:`is_deterministic` is False) each view is stored durably once
    made, for byte-stability (docs/design.md, invariant 1).  The views of
    small messages of a deterministic transcoder are made on the reactor
    thread (a thread hop costs more than encrypting a few KB), so its
    ``transcode`` must not wait on anything (no subprocess, no network).

    Another optional attribute: ``signs = True`` says the transcoder signs
    its view with the request's :attr:`TranscodeRequest.signer` when it has
    one (:class:`ViewSigner`, :func:`can_sign`).  Signed views are always
    made in worker threads.
    """

    name = Attribute("Unique short name, e.g. 'smime' or 'pgp-mime' (str).")
    media_type = Attribute("Media type of the output's top level, e.g. 'application/pkcs7-mime'.")
    key_format = Attribute("The transcoder.keys.KeyFormat of the keys it encrypts to.")
    settings_id = Attribute(
        "Stable str naming every setting that changes the output; part of the view-cache key."
    )

    def can_serve(keys):
        """Whether at least one of the StoredKeys ``keys`` is one this transcoder can encrypt to."""

    def transcode(request, out):
        """Write the view of TranscodeRequest ``request`` to binary file ``out``.

        Writes from ``out``'s current position and returns a TranscodeResult.
        Synchronous and blocking; memory stays bounded whatever the message
        size.  Raises :class:`~transcoder.transcoders.errors.TranscodeFailed`
        when no key can be used or the message cannot be transcoded; what was
        already written to ``out`` must then be discarded by the caller.
        """


def can_sign(transcoder: object) -> bool:
    """Whether ``transcoder`` declares ``signs = True``: it signs its view with
    :attr:`TranscodeRequest.signer` when one is given (see :class:`ViewSigner`).

    An attribute read, like :func:`is_deterministic`: transcoders written
    before signed views do not sign, and are never handed a signer.
    """
    return getattr(transcoder, "signs", False) is True


def is_deterministic(transcoder: object) -> bool:
    """Whether ``transcoder`` declares ``deterministic = True`` (see :class:`ITranscoder`).

    An attribute read, not part of :class:`Transcoder`: transcoders written
    before it (and gpg-backed ones) are simply not deterministic.
    """
    return getattr(transcoder, "deterministic", False) is True


@dataclass(frozen=True)
class ViewShape:
    """A view as it is known before it is encrypted: ``prefix``, a body only
    encryption makes, then ``suffix``.

    The body is ``body_size`` octets holding ``body_lines`` LF octets and
    ends with a line break (or is empty).  ``prefix`` ends with the blank
    line of the header section that introduces the body: the view's own
    header section for a single-part view (S/MIME), everything up to the
    armored text for PGP/MIME (its outer header, the control part and the
    encrypted part's header); ``suffix`` is what follows the body (the
    close-delimiter of a multipart).  The server parses the MIME structure
    of the whole view from this (:func:`transcoder.mime.entity.parse_shape`),
    so BODYSTRUCTURE and RFC822.SIZE need no encryption.
    """

    prefix: bytes
    body_size: int
    body_lines: int
    suffix: bytes = b""

    def __post_init__(self) -> None:
        if self.body_size < 0 or self.body_lines < 0 or self.body_lines > self.body_size:
            raise ValueError("a body's size and lines must be 0 <= lines <= size")

    @property
    def size(self) -> int:
        """Octets of the whole view."""
        return len(self.prefix) + self.body_size + len(self.suffix)


class ISizePredictor(Interface):
    """A transcoder that knows its output size without encrypting (optional).

    It may also have ``predicted_layout(request) -> ViewShape`` (an optional
    method, not declared here so that predictors written before it still
    verify; :func:`predicted_layout` falls back to :meth:`predicted_shape`):
    a multipart view needs it, since its structure is not in its header
    alone.  A prediction that draws (a PGP/MIME boundary) must draw exactly
    what :meth:`ITranscoder.transcode` draws for the same request, so the
    predicted octets are the served ones: the server predicts with the
    view's own derived draws, and without a view secret it uses only
    predictions that drew nothing.
    """

    def predicted_size(request):
        """Octets :meth:`ITranscoder.transcode` would write for ``request``; reads headers only."""

    def predicted_shape(request):
        """``(header, size)``: the header section (blank line included) and the total
        octets :meth:`ITranscoder.transcode` would write, in one pass over the headers."""


def predicted_layout(predictor: object, request: TranscodeRequest) -> ViewShape:
    """The :class:`ViewShape` of ``request``'s view from an :class:`ISizePredictor`.

    Its ``predicted_layout`` when it has one; else its :meth:`predicted_shape`'s
    header as the prefix and the rest as the body (lines unknown, counted 0).
    """
    layout = getattr(predictor, "predicted_layout", None)
    if layout is not None:
        return cast(ViewShape, layout(request))
    header, size = cast("SizePredictor", predictor).predicted_shape(request)
    return ViewShape(header, size - len(header), 0)


class Transcoder(Protocol):
    """The static-typing mirror of :class:`ITranscoder` (see the module docstring)."""

    @property
    def name(self) -> str:
        """See :class:`ITranscoder`."""

    @property
    def media_type(self) -> str:
        """See :class:`ITranscoder`."""

    @property
    def key_format(self) -> KeyFormat:
        """See :class:`ITranscoder`."""

    @property
    def settings_id(self) -> str:
        """See :class:`ITranscoder`."""

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """See :meth:`ITranscoder.can_serve`."""

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """See :meth:`ITranscoder.transcode`."""


class SizePredictor(Protocol):
    """The static-typing mirror of :class:`ISizePredictor`."""

    def predicted_size(self, request: TranscodeRequest) -> int:
        """See :meth:`ISizePredictor.predicted_size`."""

    def predicted_shape(self, request: TranscodeRequest) -> tuple[bytes, int]:
        """See :meth:`ISizePredictor.predicted_shape`."""


__all__ = [
    "IRandomSource",
    "ISizePredictor",
    "ITranscoder",
    "RandomSource",
    "SizePredictor",
    "TranscodeRequest",
    "TranscodeResult",
    "Transcoder",
    "ViewShape",
    "ViewSigner",
    "can_sign",
    "is_deterministic",
    "predicted_layout",
]
