"""The built-in PGP/MIME transcoders: the whole message as one ``multipart/encrypted``.

Two transcoders make the same view (RFC 3156 section 4; header protection
per RFC 9788)::

    <outer header: transcoder.mime.protect>
    MIME-Version: 1.0
    Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";
     boundary="pgp-mime-<32 hex digits>"

    This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
    --pgp-mime-...
    Content-Type: application/pgp-encrypted
    Content-Description: PGP/MIME version identification

    Version: 1

    --pgp-mime-...
    Content-Type: application/octet-stream; name="encrypted.asc"
    Content-Description: OpenPGP encrypted message
    Content-Disposition: inline; filename="encrypted.asc"

    -----BEGIN PGP MESSAGE-----
    ...
    -----END PGP MESSAGE-----

    --pgp-mime-...--

whose plaintext is the inner entity (the original message with its header
fields carried inside, ``hp="cipher"``).  This is the layout Thunderbird,
mutt and K-9/FairEmail produce and decrypt.  The boundary is the request's
draw ``pgp-mime/boundary``; it cannot collide with the content: the armor's
lines are base64 (no ``-`` at a line start but in its BEGIN/END lines,
which do not start with ``--pgp-mime-``).

* :class:`NativePgpMimeTranscoder` (``pgp-mime``, issue 12) encrypts in the
  server with :mod:`transcoder.openpgp.encoder`: no process per message,
  and every random octet -- session key, CFB prefix, RSA padding, ephemeral
  ECDH keys, boundary -- is a draw, so the view is a pure function of its
  inputs (``deterministic = True``: the server may drop and recompute it).
  It serves a set of keys only if it can encrypt to each of them natively
  (:func:`~transcoder.openpgp.recipients.recipient_for_key`: v4 RSA and
  ECDH on cv25519, P-256, P-384, P-521 -- every key the keystore accepts
  today); the draws are scoped by a digest of the inner entity's header
  and extent, as :func:`transcoder.transcoders.smime.plaintext_draws` does.
* :class:`PgpMimeTranscoder` (``pgp-mime-gpg``, issue 5) streams the inner
  entity through one gpg process per message (python-gnupg); gpg draws its
  own session key, so its views are stored once made.  It serves the keys
  the native encoder refuses (ElGamal, v5 keys, unknown curves...): it is
  registered after the native one, and :func:`select_transcoder` takes the
  first transcoder whose ``can_serve`` accepts the account's keys.  The
  native transcoder reports each key it refuses once, through its
  ``on_fallback`` callback (the server logs it).  Each message costs one gpg
  process (about 3-5 ms on top of the encryption), bounded by a
  :class:`~transcoder.openpgp.pool.GpgPool`.

**Signed views** (issue 16, ``XKEY POLICY SIGN ON``): both transcoders
declare ``signs = True``; given a request with a
:class:`~transcoder.transcoders.interfaces.ViewSigner` (the server's current
OpenPGP signing subkey), the encrypted payload is a *signed* OpenPGP message
whose literal data is the same inner entity -- RFC 3156 section 6.2, the
combined method; the MIME structure above does not change.  The native
encoder signs in one pass (:mod:`transcoder.openpgp.sign`: Ed25519 or RSA,
deterministic, creation time the signing subkey's own), so a signed view is
byte-stable and predicted like an unsigned one; gpg signs with
``--sign --local-user`` (:func:`~transcoder.openpgp.encrypt.sign_encrypt_armored`).
The signer's fingerprint is part of the view's identity (its draws and cache
key), so signed and unsigned views never share octets.

The native transcoder is an :class:`ISizePredictor`: its size is a
function of the plaintext length and the keys, and
:meth:`NativePgpMimeTranscoder.predicted_layout` gives the whole view but the
armored text -- everything before it, its size and line count, the
close-delimiter -- so the server knows RFC822.SIZE and BODYSTRUCTURE (both
parts) without encrypting, and streams a large view on its first FETCH.
The prefix holds the boundary, drawn from the request exactly as
:meth:`~NativePgpMimeTranscoder.transcode` draws it, so a prediction made
with the view's derived draws is the served view's octets.  The gpg
transcoder predicts nothing: gpg's output is known once it is made.

No twisted import here.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO

from zope.interface import implementer

from transcoder.keys.model import KeyFormat, KeyStatus, OpenPgpDetails, StoredKey
from transcoder.mime.protect import (
    InnerEntityReader,
    ProtectedParts,
    open_inner,
    parse_top_level,
    protect,
)
from transcoder.openpgp.encoder import (
    armored_message_lines,
    armored_message_size,
    encrypt_armored,
)
from transcoder.openpgp.encrypt import sign_encrypt_armored
from transcoder.openpgp.errors import GpgFailed, OpenPgpError
from transcoder.openpgp.keyring import Keyring, unusable_reason
from transcoder.openpgp.pool import GpgPool
from transcoder.openpgp.recipients import Recipient, recipient_for_key
from transcoder.openpgp.sign import LiteralSigner, SigningKey, signing_key_from_secret
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import (
    ISizePredictor,
    ITranscoder,
    TranscodeRequest,
    TranscodeResult,
    ViewShape,
    ViewSigner,
)
from transcoder.transcoders.selection import usable_keys

#: Bumped whenever the layout of the view changes, so cached views are not reused.
LAYOUT_VERSION = 1
#: Random octets in a boundary.
BOUNDARY_BYTES = 16
#: The draw the boundary is made from.
BOUNDARY_LABEL = "pgp-mime/boundary"
PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"


def make_boundary(request: TranscodeRequest) -> bytes:
    """The view's boundary: ``pgp-mime-`` and 32 hex digits (RFC 2046 section 5.1.1 bchars)."""
    return b"pgp-mime-" + request.draw(BOUNDARY_LABEL, BOUNDARY_BYTES).hex().encode("ascii")


def view_head(outer_header: bytes, boundary: bytes) -> bytes:
    """Everything before the armored message: outer header, structure, control part."""
    delimiter = b"--" + boundary + b"\r\n"
    return b"".join(
        [
            outer_header,
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n',
            b' boundary="' + boundary + b'"\r\n',
            b"\r\n",
            PREAMBLE,
            delimiter,
            # RFC 3156 section 4: the control part, labelled with the protocol.
            b"Content-Type: application/pgp-encrypted\r\n",
            b"Content-Description: PGP/MIME version identification\r\n",
            b"\r\n",
            b"Version: 1\r\n",
            b"\r\n",
            delimiter,
            # RFC 3156 section 4: the encrypted data, always application/octet-stream.
            b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n',
            b"Content-Description: OpenPGP encrypted message\r\n",
            b'Content-Disposition: inline; filename="encrypted.asc"\r\n',
            b"\r\n",
        ]
    )


def view_tail(boundary: bytes) -> bytes:
    """The close-delimiter after the armored message (its last line already ends in CRLF)."""
    return b"\r\n--" + boundary + b"--\r\n"


def _servable(key: StoredKey) -> bool:
    return (
        key.format is KeyFormat.OPENPGP
        and key.status is KeyStatus.ACTIVE
        and key.can_encrypt
        and isinstance(key.details, OpenPgpDetails)
        and bool(key.details.encryption_subkeys)
    )


def _encryption_keys(request: TranscodeRequest) -> tuple[StoredKey, ...]:
    """The keys to encrypt to; TranscodeFailed when none is usable at ``request.now``."""
    keys = tuple(
        k
        for k in usable_keys(request.keys, KeyFormat.OPENPGP, request.now)
        if unusable_reason(k, request.now) is None
    )
    if not keys:
        raise TranscodeFailed("no active, unexpired OpenPGP encryption key")
    return keys


def _view_signer(request: TranscodeRequest) -> ViewSigner | None:
    """The request's signer, checked to be an OpenPGP one; None for an unsigned view."""
    signer = request.signer
    if signer is not None and (signer.format is not KeyFormat.OPENPGP or not signer.signing_subkey):
        raise TranscodeFailed("a PGP/MIME view can only be signed by an OpenPGP signing subkey")
    return signer


def _signing_key(request: TranscodeRequest) -> SigningKey | None:
    """The native signer's key of the request (parsed by the loader, or here), or None."""
    signer = _view_signer(request)
    if signer is None:
        return None
    if isinstance(signer.private_key, SigningKey):
        return signer.private_key
    try:
        return signing_key_from_secret(signer.secret, signer.signing_subkey)
    except OpenPgpError as e:
        raise TranscodeFailed(f"server signing key not usable: {e}") from e


@implementer(ITranscoder)
class PgpMimeTranscoder:
    """Encrypts each message to the user's active OpenPGP keys (every one of them).

    ``keyring`` is the server's :class:`~transcoder.openpgp.keyring.Keyring`
    (one GNUPGHOME under the data directory); ``pool`` bounds concurrent gpg
    processes.  Safe to call from several worker threads at once.
    """

    name = "pgp-mime-gpg"
    media_type = "multipart/encrypted"
    key_format = KeyFormat.OPENPGP
    settings_id = f"pgp-mime-v{LAYOUT_VERSION};aes256;compress-none;armor"
    deterministic = False
    signs = True

    def __init__(self, keyring: Keyring, pool: GpgPool | None = None) -> None:
        self.keyring = keyring
        self.pool = pool if pool is not None else GpgPool()

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """Whether any key is an active OpenPGP key with a validated encryption subkey."""
        return any(_servable(k) for k in keys)

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """Write the PGP/MIME view of ``request.source`` to ``out``, streaming through gpg."""
        keys = _encryption_keys(request)
        parts = protect(parse_top_level(request.source, request.size), request.obscure_subject)
        boundary = make_boundary(request)
        head = view_head(parts.outer_header, boundary)
        tail = view_tail(boundary)
        out.write(head)
        inner = InnerEntityReader(request.source, parts)
        signer = _view_signer(request)
        try:
            with self.pool.slot():
                if signer is None:
                    armored = self.keyring.encrypt_armored(inner, out, keys, request.now)
                else:
                    entries = [self.keyring.sync_key(key) for key in keys]
                    armored = sign_encrypt_armored(
                        inner,
                        out,
                        [entry.recipient for entry in entries],
                        [entry.path for entry in entries],
                        signer.secret,
                        signer.signing_subkey,
                        self.keyring.gpg_binary,
                    )
        except GpgFailed as e:
            raise TranscodeFailed(e.log_detail()) from e
        except (ValueError, OSError) as e:  # a malformed stored key, an unwritable keyring
            raise TranscodeFailed(f"OpenPGP keyring: {e!r}") from e
        out.write(tail)
        return TranscodeResult(len(head) + armored + len(tail), self.media_type)


#: Called with a key the native encoder refuses and why (once per key version).
FallbackReport = Callable[[StoredKey, str], None]


def pgp_draws(
    request: TranscodeRequest, parts: ProtectedParts, recipients: Sequence[Recipient]
) -> Callable[[str, int], bytes]:
    """The request's draws, each label scoped to the inner entity ``parts`` describe
    and the (sub)keys encrypted to.

    As :func:`transcoder.transcoders.smime.plaintext_draws`: SHA-256 of the
    inner header section and the body's extent, so the session key and the
    CFB prefix are a function of the exact plaintext encrypted; and of the
    subkeys' fingerprints, so a key that gains a new encryption subkey (same
    primary fingerprint) gets a new session key.
    """
    extent = f"{parts.body_start}-{parts.body_end}".encode("ascii")
    subkeys = b"".join(r.fingerprint for r in recipients)
    scope = hashlib.sha256(parts.inner_header + b"\0" + extent + b"\0" + subkeys).hexdigest()[:32]
    return lambda label, size: request.draw(f"pgp-mime/{scope}/{label}", size)


#: The length of every boundary (``pgp-mime-`` and 32 hex digits): sizes need no draw.
BOUNDARY_LENGTH = len(b"pgp-mime-") + 2 * BOUNDARY_BYTES


@implementer(ITranscoder, ISizePredictor)
class NativePgpMimeTranscoder:
    """Encrypts each message to the user's active OpenPGP keys in the server (module doc).

    ``on_fallback`` is told once about each key version it will not serve
    (the gpg transcoder then serves the account).  Safe to call from several
    worker threads at once.
    """

    name = "pgp-mime"
    media_type = "multipart/encrypted"
    key_format = KeyFormat.OPENPGP
    settings_id = f"pgp-mime-v{LAYOUT_VERSION};native;aes256;seipd1;compress-none;armor"
    deterministic = True
    signs = True

    def __init__(self, on_fallback: FallbackReport | None = None) -> None:
        self.on_fallback = on_fallback
        self._reported: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def _native(self, key: StoredKey) -> bool:
        """Whether the encoder can encrypt to ``key``; reports a refusal once."""
        try:
            recipient_for_key(key)
        except OpenPgpError as e:
            marker = (key.fingerprint, hashlib.sha256(key.material).digest())
            with self._lock:
                first = marker not in self._reported
                self._reported.add(marker)
            if first and self.on_fallback is not None:
                self.on_fallback(key, str(e))
            return False
        return True

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """Whether some key is servable and the encoder can encrypt to every servable key."""
        servable = [k for k in keys if _servable(k)]
        return bool(servable) and all(self._native(k) for k in servable)

    def _recipients(self, request: TranscodeRequest) -> tuple[Recipient, ...]:
        """The recipients of the usable keys; TranscodeFailed when none or one is refused."""
        keys = _encryption_keys(request)
        try:
            return tuple(recipient_for_key(k) for k in keys)
        except OpenPgpError as e:
            raise TranscodeFailed(f"OpenPGP key not usable by the native encoder: {e}") from e

    def _parts(self, request: TranscodeRequest) -> ProtectedParts:
        """The protected header sections; the server's parse of the header when it made one."""
        entity = request.top_level
        if entity is None:
            entity = parse_top_level(request.source, request.size)
        return protect(entity, request.obscure_subject)

    def predicted_size(self, request: TranscodeRequest) -> int:
        """Octets :meth:`transcode` writes for ``request``: headers read, nothing drawn."""
        recipients = self._recipients(request)
        parts = self._parts(request)
        placeholder = b"-" * BOUNDARY_LENGTH
        fixed = len(view_head(parts.outer_header, placeholder)) + len(view_tail(placeholder))
        return fixed + _armored_size(parts.inner_size, recipients, _signing_key(request))

    def predicted_layout(self, request: TranscodeRequest) -> ViewShape:
        """The view but its armored text: the head, the armor's size and lines, the tail.

        Reads headers only and draws the boundary as :meth:`transcode` does.
        """
        recipients = self._recipients(request)
        parts = self._parts(request)
        key = _signing_key(request)
        boundary = make_boundary(request)
        armored = _armored_size(parts.inner_size, recipients, key)
        lines = armored_message_lines(parts.inner_size, recipients, key)
        return ViewShape(
            view_head(parts.outer_header, boundary), armored, lines, view_tail(boundary)
        )

    def predicted_shape(self, request: TranscodeRequest) -> tuple[bytes, int]:
        """Everything before the armored text (it ends with a blank line) and the size."""
        shape = self.predicted_layout(request)
        return shape.prefix, shape.size

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """Write the PGP/MIME view of ``request.source`` to ``out``, streaming the body."""
        recipients = self._recipients(request)
        parts = self._parts(request)
        key = _signing_key(request)
        boundary = make_boundary(request)
        head = view_head(parts.outer_header, boundary)
        tail = view_tail(boundary)
        out.write(head)
        try:
            armored = encrypt_armored(
                open_inner(request.source, parts),
                parts.inner_size,
                out,
                recipients,
                pgp_draws(request, parts, recipients),
                None if key is None else LiteralSigner(key),
            )
        except (OpenPgpError, EOFError) as e:  # the source shrank under us, a refused draw
            raise TranscodeFailed(f"OpenPGP encryption failed: {e}") from e
        out.write(tail)
        return TranscodeResult(len(head) + armored + len(tail), self.media_type)


def _armored_size(
    plain_size: int, recipients: Sequence[Recipient], signer: SigningKey | None = None
) -> int:
    """:func:`armored_message_size`, a refusal (too large to frame) as TranscodeFailed."""
    try:
        return armored_message_size(plain_size, recipients, signer)
    except OpenPgpError as e:
        raise TranscodeFailed(f"OpenPGP encryption refused: {e}") from e


__all__ = [
    "LAYOUT_VERSION",
    "NativePgpMimeTranscoder",
    "PgpMimeTranscoder",
    "make_boundary",
    "pgp_draws",
    "view_head",
    "view_tail",
]
