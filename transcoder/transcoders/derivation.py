"""Where a view's randomness comes from: labelled draws, from the system or derived.

A transcoder asks its request for octets by purpose -- ``draw("cms/cek",
32)`` -- never for "some random octets" (:class:`IRandomSource`).  Two
sources answer:

* :class:`DerivedRandom`, what the server uses (issue 9, docs/design.md
  invariant 1): every draw is a pure function of the server's view secret,
  the *view identity* (:class:`ViewIdentity`: SHA-256 of the stored
  message's octets, the recipient key fingerprints, the transcoder's name
  and settings id) and the draw's label and length.  The same message to
  the same keys under the same settings is then the same octets on every
  server sharing the secret, with no copy kept anywhere.
* :class:`SystemRandom`, fresh octets from ``os.urandom`` for each draw
  (embedders without a secret, tests); :class:`CallableRandom` adapts a
  plain ``n -> bytes`` function, the seam's older form.

The construction is HKDF-SHA-256 (RFC 5869) and nothing else::

    PRK   = HKDF-Extract(salt = secret, IKM = identity.encode())
          = HMAC-SHA-256(secret, identity.encode())           -- RFC 5869 section 2.2
    block = HKDF-Expand(PRK, info = LP(label) || I64(size) || I32(i), L)  -- section 2.3
    draw(label, size) = block 0 || block 1 || ...  (each L = 255 * 32 octets, the last shorter)

where ``LP(x)`` is ``x`` prefixed with its length as a 32-bit big-endian
integer and ``I64``/``I32`` are big-endian integers.  The secret is the
HMAC key (RFC 5869 section 3.1 allows a secret salt; HMAC keyed with 32
uniformly random octets is a PRF of the identity), the identity is a
canonical, length-prefixed encoding (no two identities encode alike), the
label separates purposes, and the size in ``info`` keeps a short draw from
being a prefix of a longer one.  Draws longer than HKDF-Expand's limit of
255 hash lengths continue with a block counter ("HKDF-Expand with a counter
label").  Nothing here is secret beyond the secret itself: labels, sizes and
the identity may all be public.

Why this keeps the encryption sound: a content-encryption key and its IV
or nonce are derived from an identity that includes the message's SHA-256,
so two different plaintexts never share a (key, nonce) pair; the same pair
recurs only for the identical message to the identical keys, which is the
identical ciphertext -- nothing new to learn, and no GCM nonce reuse across
different plaintexts.  Whoever holds the secret could recompute every
view's keys -- but the secret lives on the server, next to the plaintext
mail those keys protect.

No twisted import here.
"""

# zope.interface declares methods without ``self``:
# ruff: noqa: N805

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from zope.interface import Interface, implementer

#: Octets of a view secret.
SECRET_SIZE = 32
#: Octets of a SHA-256 digest.
DIGEST_SIZE = 32
#: The most one HKDF-Expand call gives (RFC 5869 section 2.3: L <= 255 * HashLen).
EXPAND_LIMIT = 255 * DIGEST_SIZE
#: Names this construction; part of every identity's encoding (a new one for a new scheme).
CONTEXT = b"imap-transcoder/view-randomness/v1"
#: Octets read at a time when a message is hashed.
_HASH_CHUNK = 1 << 20


class IRandomSource(Interface):
    """Where a transcoder gets every octet of randomness its view contains."""

    def draw(label, size):
        """``size`` octets (bytes) for the purpose named by ``label`` (a non-empty str).

        A derived source gives the same octets for the same label and size
        every time; draws under different labels are independent.  Use one
        label per purpose (and per recipient where there are several).
        """

    def __call__(size):
        """``size`` octets for no named purpose: each call gives new ones (the older seam)."""


class RandomSource(Protocol):
    """The static-typing mirror of :class:`IRandomSource`."""

    def draw(self, label: str, size: int) -> bytes:
        """See :meth:`IRandomSource.draw`."""

    def __call__(self, size: int) -> bytes:
        """See :meth:`IRandomSource.__call__`."""


def _check_draw(label: str, size: int) -> None:
    if not isinstance(label, str) or not label:
        raise ValueError("a draw needs a non-empty label")
    if size < 0:
        raise ValueError(f"negative draw size {size}")


@implementer(IRandomSource)
class SystemRandom:
    """Fresh octets from the operating system for every draw (labels are not used)."""

    def draw(self, label: str, size: int) -> bytes:
        """``size`` octets from ``os.urandom``."""
        _check_draw(label, size)
        return os.urandom(size)

    def __call__(self, size: int) -> bytes:
        """``size`` octets from ``os.urandom``."""
        return os.urandom(size)


@implementer(IRandomSource)
class CallableRandom:
    """A plain ``n -> bytes`` function as a source: each draw, labelled or not, is its next output.

    Deterministic when the function is (``random.Random(seed).randbytes``),
    but draws depend on their order, not their labels.
    """

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self.random_bytes = random_bytes

    def draw(self, label: str, size: int) -> bytes:
        """The function's next ``size`` octets."""
        _check_draw(label, size)
        return self.random_bytes(size)

    def __call__(self, size: int) -> bytes:
        """The function's next ``size`` octets."""
        return self.random_bytes(size)


def _lp(data: bytes) -> bytes:
    """``data`` prefixed with its length (32-bit big-endian): concatenations stay unambiguous."""
    return len(data).to_bytes(4, "big") + data


@dataclass(frozen=True)
class ViewIdentity:
    """Everything a view is a function of, besides the secret.

    ``message_sha256`` is SHA-256 of the stored message's octets (see
    :func:`message_digest`); ``fingerprints`` the recipient keys', in a
    fixed order (the server sorts them); ``transcoder`` and ``settings_id``
    name the transcoder and every setting that changes its output.
    ``signer`` is the fingerprint of the server key that signs the view
    (:class:`~transcoder.transcoders.interfaces.ViewSigner`), ``""`` for an
    unsigned view: signed and unsigned views, and views signed by different
    keys, never share draws.
    """

    message_sha256: bytes
    fingerprints: tuple[str, ...]
    transcoder: str
    settings_id: str
    signer: str = ""

    def __post_init__(self) -> None:
        if len(self.message_sha256) != DIGEST_SIZE:
            raise ValueError(f"a message digest has {DIGEST_SIZE} octets")
        if not isinstance(self.fingerprints, tuple):
            object.__setattr__(self, "fingerprints", tuple(self.fingerprints))

    def encode(self) -> bytes:
        """The canonical encoding: each field length-prefixed, the fingerprints a nested list.

        A signer adds a last field (``signer=`` and its fingerprint); an
        unsigned view's encoding is what it was before signed views existed,
        so its draws, and its octets, did not change.
        """
        keys = b"".join(_lp(fp.encode("utf-8")) for fp in self.fingerprints)
        signer = (_lp(b"signer=" + self.signer.encode("utf-8")),) if self.signer else ()
        return b"".join(
            (
                _lp(CONTEXT),
                _lp(self.message_sha256),
                _lp(keys),
                _lp(self.transcoder.encode("utf-8")),
                _lp(self.settings_id.encode("utf-8")),
                *signer,
            )
        )


@dataclass(frozen=True)
class ViewSecret:
    """The server's view secret: 32 octets, never shown (not in ``repr``)."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) != SECRET_SIZE:
            raise ValueError(f"a view secret has {SECRET_SIZE} octets, not {len(self.value)}")

    @property
    def identifier(self) -> str:
        """16 hex digits naming this secret (an HMAC of a constant): tells secrets apart,
        reveals nothing of the secret.  Part of view-cache keys, so a new secret
        never serves a view made with the old one."""
        return hmac.digest(self.value, CONTEXT + b"/identifier", "sha256")[:8].hex()

    def randomness(self, identity: ViewIdentity) -> DerivedRandom:
        """The source of every draw of the view named by ``identity``."""
        return DerivedRandom(self.value, identity)


@implementer(IRandomSource)
class DerivedRandom:
    """Draws derived from a secret and a :class:`ViewIdentity` (see the module docstring)."""

    def __init__(self, secret: bytes, identity: ViewIdentity) -> None:
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"a view secret has {SECRET_SIZE} octets")
        self.identity = identity
        # HKDF-Extract (RFC 5869 section 2.2): PRK = HMAC-Hash(salt, IKM).
        self._prk = hmac.digest(secret, identity.encode(), "sha256")
        self._calls = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DerivedRandom({self.identity!r})"

    def draw(self, label: str, size: int) -> bytes:
        """``size`` octets for ``label``: HKDF-Expand blocks of at most 255 * 32 octets."""
        _check_draw(label, size)
        prefix = _lp(label.encode("utf-8")) + size.to_bytes(8, "big")
        blocks = []
        for index, start in enumerate(range(0, size, EXPAND_LIMIT)):
            length = min(EXPAND_LIMIT, size - start)
            info = prefix + index.to_bytes(4, "big")
            blocks.append(HKDFExpand(hashes.SHA256(), length, info).derive(self._prk))
        return b"".join(blocks)

    def __call__(self, size: int) -> bytes:
        """The n-th unlabelled call draws under the label ``stream/<n>``."""
        with self._lock:
            call = next(self._calls)
        return self.draw(f"stream/{call}", size)


@dataclass(frozen=True)
class ViewRandomness:
    """What the server knows of a view's identity before it reads the message.

    :meth:`for_message` hashes the message and gives its source of draws:
    derived under ``secret``, or fresh system randomness without one.
    """

    secret: ViewSecret | None
    fingerprints: tuple[str, ...]
    transcoder: str
    settings_id: str
    #: The signing key's fingerprint (:attr:`ViewIdentity.signer`), ``""``: unsigned.
    signer: str = ""

    def for_message(self, source: BinaryIO, size: int) -> RandomSource:
        """The draws of the view of the ``size``-octet message in ``source`` (read to hash it)."""
        if self.secret is None:
            return SystemRandom()
        digest = message_digest(source, size)
        identity = ViewIdentity(
            digest, self.fingerprints, self.transcoder, self.settings_id, self.signer
        )
        return self.secret.randomness(identity)


def message_digest(source: BinaryIO, size: int) -> bytes:
    """SHA-256 of the first ``size`` octets of ``source`` (read from position 0).

    Leaves ``source`` after those octets; raises EOFError if it is shorter.
    hashlib releases the GIL on large buffers, so worker threads hash in parallel.
    """
    source.seek(0)
    if size <= _HASH_CHUNK:  # most mail: one read, no buffer to allocate
        data = source.read(size)
        if len(data) < size:
            raise EOFError(f"message ended {size - len(data)} octets short of {size}")
        return hashlib.sha256(data).digest()
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(_HASH_CHUNK, max(size, 1))))
    remaining = size
    while remaining:
        view = buffer[: min(remaining, len(buffer))]
        count = source.readinto(view)  # type: ignore[attr-defined]
        if not count:
            raise EOFError(f"message ended {remaining} octets short of {size}")
        digest.update(view[:count])
        remaining -= count
    return digest.digest()


__all__ = [
    "CONTEXT",
    "SECRET_SIZE",
    "CallableRandom",
    "DerivedRandom",
    "IRandomSource",
    "RandomSource",
    "SystemRandom",
    "ViewIdentity",
    "ViewRandomness",
    "ViewSecret",
    "message_digest",
]
