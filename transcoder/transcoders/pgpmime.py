"""The built-in PGP/MIME transcoder: the whole message as one ``multipart/encrypted``.

The recipe on top of :mod:`transcoder.openpgp` (gpg through python-gnupg).
The view (RFC 3156 section 4; header protection per RFC 9788)::

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
fields carried inside, ``hp="cipher"``), streamed from the stored file into
gpg's stdin; gpg's armored output is written to ``out`` as it comes.  This
is the layout Thunderbird, mutt and K-9/FairEmail produce and decrypt.

The boundary is the request's draw ``pgp-mime/boundary``, so it is derived
like every S/MIME value; gpg's own randomness (session key, PKESK) is not
yet (issue 12 brings a native encoder): a PGP/MIME view is byte-stable only
through the view cache.  The boundary cannot collide with the content: the
armor's lines are base64 (no ``-`` at a line start but in its BEGIN/END
lines, which do not start with ``--pgp-mime-``).

No size prediction (no :class:`ISizePredictor`): gpg's output length depends
on its packet framing (partial body lengths) and the recipients' key types,
so it cannot be computed exactly without encrypting.

Each message costs one gpg process (about 3-5 ms on top of the encryption);
gpg cannot encrypt several independent messages in one run, so the
transcoder bounds the number of concurrent processes with a
:class:`~transcoder.openpgp.pool.GpgPool` (default: one per CPU) and lets
the worker threads keep every core busy.

No twisted import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from zope.interface import implementer

from transcoder.keys.model import KeyFormat, KeyStatus, OpenPgpDetails, StoredKey
from transcoder.mime.protect import InnerEntityReader, parse_top_level, protect
from transcoder.openpgp.errors import GpgFailed
from transcoder.openpgp.keyring import Keyring, unusable_reason
from transcoder.openpgp.pool import GpgPool
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import ITranscoder, TranscodeRequest, TranscodeResult
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


@implementer(ITranscoder)
class PgpMimeTranscoder:
    """Encrypts each message to the user's active OpenPGP keys (every one of them).

    ``keyring`` is the server's :class:`~transcoder.openpgp.keyring.Keyring`
    (one GNUPGHOME under the data directory); ``pool`` bounds concurrent gpg
    processes.  Safe to call from several worker threads at once.
    """

    name = "pgp-mime"
    media_type = "multipart/encrypted"
    key_format = KeyFormat.OPENPGP
    settings_id = f"pgp-mime-v{LAYOUT_VERSION};aes256;compress-none;armor"

    def __init__(self, keyring: Keyring, pool: GpgPool | None = None) -> None:
        self.keyring = keyring
        self.pool = pool if pool is not None else GpgPool()

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        """Whether any key is an active OpenPGP key with a validated encryption subkey."""
        return any(_servable(k) for k in keys)

    def _keys(self, request: TranscodeRequest) -> tuple[StoredKey, ...]:
        """The keys to encrypt to; TranscodeFailed when none is usable at ``request.now``."""
        keys = tuple(
            k
            for k in usable_keys(request.keys, KeyFormat.OPENPGP, request.now)
            if unusable_reason(k, request.now) is None
        )
        if not keys:
            raise TranscodeFailed("no active, unexpired OpenPGP encryption key")
        return keys

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        """Write the PGP/MIME view of ``request.source`` to ``out``, streaming through gpg."""
        keys = self._keys(request)
        parts = protect(parse_top_level(request.source, request.size), request.obscure_subject)
        boundary = make_boundary(request)
        head = view_head(parts.outer_header, boundary)
        tail = view_tail(boundary)
        out.write(head)
        inner = InnerEntityReader(request.source, parts)
        try:
            with self.pool.slot():
                armored = self.keyring.encrypt_armored(inner, out, keys, request.now)
        except GpgFailed as e:
            raise TranscodeFailed(e.log_detail()) from e
        except (ValueError, OSError) as e:  # a malformed stored key, an unwritable keyring
            raise TranscodeFailed(f"OpenPGP keyring: {e!r}") from e
        out.write(tail)
        return TranscodeResult(len(head) + armored + len(tail), self.media_type)


__all__ = ["LAYOUT_VERSION", "PgpMimeTranscoder", "make_boundary", "view_head", "view_tail"]
