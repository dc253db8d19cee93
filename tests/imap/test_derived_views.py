"""Views derived from the view secret (issue 9): separate servers sharing it serve the same octets.

Each "server" here is a real TranscodingIMAP4Server in process with its own
Maildir, keystore (SQLite), view cache and TranscodingConfig; only the
:class:`ViewSecret` may be shared.  The same message is delivered to each
and the same certificate provisioned over XKEY; what ``FETCH BODY[]``
sends is compared octet for octet, and opened with ``openssl cms -decrypt``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.internet import defer

from tests.imap.harness import Session, enable_smime, make_session
from tests.imap.test_fetch_races import openssl_decrypt
from tests.integration.transcoding import expected_inner
from tests.transcoders.smime_keys import SmimeIdentity, identity
from transcoder.cms import CmsSettings
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.derivation import ViewSecret
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

SECRET = ViewSecret(bytes.fromhex("5e" * 32))
MESSAGE = (
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: derived\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + b"The same view everywhere.\r\n" * 50
)
_LITERAL = re.compile(rb"\* 1 FETCH \(BODY\[\] \{(\d+)\}\r\n")
#: (certificate kind, S/MIME cipher, RSA padding): every recipient type and both modes.
KINDS = [
    ("rsa2048", "aes256-cbc", "pkcs1v15"),
    ("rsa2048", "aes128-gcm", "oaep"),
    ("p256", "aes256-gcm", "pkcs1v15"),
    ("p384", "aes128-cbc", "pkcs1v15"),
    ("p521", "aes256-cbc", "pkcs1v15"),
]


@contextmanager
def server(
    root: Path, who: SmimeIdentity, secret: ViewSecret | None, cms: CmsSettings
) -> Iterator[Session]:
    """A server with its own data under ``root``: ``who``'s key, MODE ALWAYS, MESSAGE in INBOX."""
    root.mkdir(parents=True, exist_ok=True)
    with KeyStore(root / "keys.db") as store:
        session = make_session(root)
        registry = TranscoderRegistry([SmimeTranscoder(cms)])
        cache = ViewCache(root / "views", defer.maybeDeferred)
        transcoding = TranscodingConfig(registry, cache, view_secret=secret)
        enable_smime(session, store, transcoding, who.cert_der)
        session.deliver(MESSAGE)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        yield session


def fetch_body(session: Session) -> bytes:
    """The octets of ``FETCH 1 BODY.PEEK[]``."""
    session.send(b"f FETCH 1 (BODY.PEEK[])\r\n")
    out = session.output()
    assert b"f OK" in out, out
    match = _LITERAL.search(out.replace(b"BODY.PEEK[]", b"BODY[]"))
    assert match, out
    return out[match.end() : match.end() + int(match.group(1))]


def view_from(root: Path, who: SmimeIdentity, secret: ViewSecret | None, cms: CmsSettings) -> bytes:
    """What a fresh server under ``root`` serves as MESSAGE's view."""
    with server(root, who, secret, cms) as session:
        return fetch_body(session)


@pytest.mark.parametrize(("kind", "cipher", "padding"), KINDS)
def test_two_servers_sharing_a_secret_serve_the_same_octets(
    tmp_path: Path, kind: str, cipher: str, padding: str
) -> None:
    """Separate stores, keystores and caches, one secret: identical BODY[]; openssl opens it."""
    who, cms = identity(kind), CmsSettings(cipher, padding)
    first = view_from(tmp_path / "a", who, SECRET, cms)
    second = view_from(tmp_path / "b", who, SECRET, cms)
    assert first == second
    assert openssl_decrypt(first, who, tmp_path) == expected_inner(MESSAGE)


def test_another_secret_or_none_gives_other_octets(tmp_path: Path) -> None:
    """A different secret changes the view; without a secret every server draws its own."""
    who, cms = identity("p256"), CmsSettings()
    shared = view_from(tmp_path / "a", who, SECRET, cms)
    other = view_from(tmp_path / "b", who, ViewSecret(bytes(32)), cms)
    unshared = [view_from(tmp_path / name, who, None, cms) for name in ("c", "d")]
    assert len({shared, other, *unshared}) == 4
    assert len(shared) == len(other) == len(unshared[0])  # the sizes never depend on it


def test_the_view_is_recomputed_identically_without_its_cache_entry(tmp_path: Path) -> None:
    """Dropping the cached view and fetching again yields the same octets, not a new encryption."""
    who, cms = identity("rsa2048"), CmsSettings()
    with server(tmp_path / "a", who, SECRET, cms) as session:
        first = fetch_body(session)
        session.server.transcoding.cache.invalidate_account("alice@example.org")
        assert fetch_body(session) == first


def test_a_new_secret_never_serves_a_view_cached_under_the_old(tmp_path: Path) -> None:
    """The secret is part of the cache key: after a rotation the cached view is not served."""
    who, cms = identity("p384"), CmsSettings()
    with server(tmp_path / "a", who, SECRET, cms) as session:
        first = fetch_body(session)
        config = session.server.transcoding
        session.server.transcoding = TranscodingConfig(
            config.registry, config.cache, view_secret=ViewSecret(bytes(32))
        )
        rotated = fetch_body(session)
    assert rotated != first
    assert rotated == view_from(tmp_path / "b", who, ViewSecret(bytes(32)), cms)
