"""The server's signing keys as transcoders get them: :class:`ServerSigning` (issue 16).

Signed views (``XKEY POLICY SIGN ON``, or the server's ``--sign-views``
default) are signed with the *current* signing key of the view's format in
``DIR/server-keys/`` (:mod:`transcoder.keys.server_keys_files`), handed to
the transcoder as a :class:`~transcoder.transcoders.interfaces.ViewSigner`.
Rules:

* Only a current key signs: the index is re-read when it changes (a stat
  per call), so after ``transcoder-admin server-key rotate`` (another
  process) the next FETCH signs with the new key and a retired signing key
  is never handed out again.
* Dual key pairs (draft-kadobayashi-smime-secureops section 4.1): only keys
  whose role is signing are loaded, and an S/MIME certificate must allow
  ``digitalSignature`` and neither ``keyEncipherment``, ``dataEncipherment``
  nor ``keyAgreement`` (RFC 8550 section 4.4.2), else the view fails closed.
  The decryption side (:mod:`transcoder.inbound`) takes encryption keys only.
* A new signing key changes every signed view of its format: the key's
  fingerprint is part of the server-wide view settings
  (:func:`transcoder.imap.view_epoch.server_view_settings`), so the view
  epoch of every account whose views of that format are signed moves (a new
  UIDVALIDITY) -- at start, and when a running server first sees the
  rotated key (:meth:`ServerSigning.current`).

Loading runs in worker threads (file reads, key parsing); each key is parsed
once and kept while current.  No twisted import here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys import ServerKey
from transcoder.keys.server_keys_files import ServerKeyFiles
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import ViewSigner


def check_signing_certificate(certificate: x509.Certificate) -> None:
    """Refuse a certificate that may not sign views, or may also encrypt (TranscodeFailed)."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise TranscodeFailed("the server signing certificate has no keyUsage") from None
    if not usage.digital_signature:
        raise TranscodeFailed("the server signing certificate lacks digitalSignature")
    if usage.key_encipherment or usage.data_encipherment or usage.key_agreement:
        raise TranscodeFailed("the server signing certificate also allows encryption (dual pairs)")


def load_signer(key: ServerKey, secret: bytes) -> ViewSigner:
    """The :class:`ViewSigner` of server key ``key`` whose private file holds ``secret``."""
    if KeyUsage.SIGN not in key.usages:
        raise TranscodeFailed(f"server key {key.fingerprint} is not a signing key")
    if key.format is KeyFormat.SMIME:
        return _smime_signer(key, secret)
    from transcoder.openpgp.sign import signing_key_from_secret

    if len(key.subkeys) < 2:
        raise TranscodeFailed(f"server OpenPGP key {key.fingerprint} has no signing subkey")
    subkey = key.subkeys[1]
    try:
        parsed = signing_key_from_secret(secret, subkey)
    except Exception as e:  # the parser's refusals (unsupported algorithm, malformed key)
        raise TranscodeFailed(f"server OpenPGP signing key unusable: {e}") from e
    return ViewSigner(KeyFormat.OPENPGP, key.fingerprint, key.public, secret, subkey, parsed)


def _smime_signer(key: ServerKey, secret: bytes) -> ViewSigner:
    certificate = x509.load_pem_x509_certificate(key.public)
    check_signing_certificate(certificate)
    private: Any = serialization.load_pem_private_key(secret, None)
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TranscodeFailed("server S/MIME signing keys are RSA or EC")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != certificate.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise TranscodeFailed("the server signing key does not belong to its certificate")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return ViewSigner(KeyFormat.SMIME, key.fingerprint, der, secret, "", private)


class ServerSigning:
    """What signed views need of the server: its ``--sign-views`` default and its keys.

    ``files`` is ``DIR/server-keys/`` (``None``: no server keys, so a view
    that must be signed fails closed).  Thread-safe.
    """

    def __init__(self, files: ServerKeyFiles | None, default: bool = False) -> None:
        self.files = files
        self.default = default
        self._lock = threading.Lock()
        self._loaded: dict[str, ViewSigner] = {}
        #: ``note()`` hands the server-wide view settings to the keystore (set by the
        #: server at start, :func:`transcoder.imap.view_epoch.note_server_views`).
        self._note: Callable[[], object] | None = None
        self._noted: str | None = None

    def current_keys(self) -> dict[KeyFormat, ServerKey]:
        """The current signing key of each format (re-read when the index changed)."""
        if self.files is None:
            return {}
        found: dict[KeyFormat, ServerKey] = {}
        for fmt in KeyFormat:
            key = self.files.current_for(fmt, KeyUsage.SIGN)
            if key is not None:
                found[fmt] = key
        return found

    def fingerprints_by_format(self) -> tuple[tuple[str, str], ...]:
        """(format value, fingerprint) of the current signing keys, sorted."""
        return tuple(
            sorted((fmt.value, key.fingerprint) for fmt, key in self.current_keys().items())
        )

    def fingerprints(self) -> str:
        """``OPENPGP=<fpr> SMIME=<fpr>`` of the current signing keys (``""``: none)."""
        return " ".join(f"{name}={fpr}" for name, fpr in self.fingerprints_by_format())

    def track(self, note: Callable[[], object]) -> None:
        """``note()`` hands the server-wide view settings (these keys now among them) to
        the keystore; :meth:`current` calls it again when the signing keys change."""
        with self._lock:
            self._note = note
            self._noted = self.fingerprints()

    def current(self) -> str:
        """The current signing keys' fingerprints, recorded first if they are new (blocking).

        A running server that finds a rotated key hands the new settings to
        the keystore before using it, which moves the view epoch of each
        account whose views of that format are signed at its next read; the
        caller reads the epoch after this, so no view signed by the new key is
        served under an epoch of the old one.
        """
        fingerprints = self.fingerprints()
        with self._lock:
            note, noted = self._note, self._noted
        if note is not None and fingerprints != noted:
            note()
            with self._lock:
                self._noted = fingerprints
        return fingerprints

    def signer(self, fmt: KeyFormat) -> ViewSigner:
        """The current signing key of ``fmt`` (TranscodeFailed when there is none)."""
        key = self.current_keys().get(fmt)
        if key is None or self.files is None:
            raise TranscodeFailed(f"no current server {fmt.value} signing key")
        with self._lock:
            loaded = self._loaded.get(key.fingerprint)
        if loaded is None:
            loaded = load_signer(key, self.files.private(key))
            with self._lock:
                # Only current keys are kept: a retired one is dropped here.
                current = {k.fingerprint for k in self.current_keys().values()}
                self._loaded = {f: s for f, s in self._loaded.items() if f in current}
                self._loaded[key.fingerprint] = loaded
        return loaded


__all__ = ["ServerSigning", "check_signing_certificate", "load_signer"]
