"""A protocol-level CONVERT session: the harness's server with a keystore, views and a secret."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from tests.imap.harness import InlineKeyStore, Session, make_session, second_session
from tests.keys.certs import NOW
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.imap.xkey import KeyAccess
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.derivation import ViewSecret
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

_LITERAL = re.compile(rb"(?P<label>[A-Z.]+\[[^\]]*\](?:<\d+>)?) ~?\{(?P<size>\d+)\}\r\n")


def converting_session(
    root: Path,
    store: KeyStore,
    *messages: bytes,
    cert_der: bytes | None = None,
    always: bool = False,
    secret: ViewSecret | None = None,
) -> Session:
    """A selected session on ``messages`` with keys in ``store`` (XKEY PUT ``cert_der``;
    ``always``: FORMAT SMIME, MODE ALWAYS) and views made with ``secret``."""
    session = make_session(root)
    configure(session, store, root, secret)
    if cert_der is not None:
        session.send(b"k XKEY PUT {%d+}\r\n" % len(cert_der) + cert_der + b"\r\n")
        assert b"k OK" in session.output()
    if always:
        for setting in (b"FORMAT SMIME", b"MODE ALWAYS"):
            _, done = session.command(b"XKEY POLICY " + setting)
            assert b"OK" in done, done
    for message in messages:
        session.deliver(message)
    _, done = session.command(b"SELECT INBOX")
    assert b" OK " in done, done
    return session


def configure(session: Session, store: KeyStore, root: Path, secret: ViewSecret | None) -> None:
    """Give ``session``'s server the keystore (at tests.keys.certs.NOW) and a TranscodingConfig."""
    clock = Clock()
    clock.advance(NOW.timestamp())
    session.server.keys = KeyAccess(InlineKeyStore(store, clock, ThreadPool()), clock)
    cache = ViewCache(root / "views", defer.maybeDeferred)
    registry = TranscoderRegistry([SmimeTranscoder()])
    session.server.transcoding = TranscodingConfig(registry, cache, view_secret=secret)


def another_session(
    first: Session, store: KeyStore, root: Path, secret: ViewSecret | None
) -> Session:
    """A second connection of the same account, configured alike, INBOX selected."""
    session = second_session(first)
    configure(session, store, root, secret)
    _, done = session.command(b"SELECT INBOX")
    assert b" OK " in done, done
    return session


def run(session: Session, tag: bytes, line: bytes) -> bytes:
    """Send ``tag line``; everything the server answered, up to and including the tagged line."""
    session.send(tag + b" " + line + b"\r\n")
    out = session.output()
    assert re.search(rb"(^|\r\n)" + tag + rb" (OK|NO|BAD)", out), out
    return out


def literal(out: bytes, label: bytes) -> bytes:
    """The octets of the literal after ``label`` (e.g. ``BINARY[2]<0>``) in ``out``."""
    for match in _LITERAL.finditer(out):
        if match.group("label") == label:
            return out[match.end() : match.end() + int(match.group("size"))]
    raise AssertionError(f"no literal {label!r} in {out[:300]!r}")


def tagged(out: bytes, tag: bytes) -> bytes:
    """The tagged completion line for ``tag``."""
    found = re.findall(rb"(?:^|\r\n)(" + tag + rb" (?:OK|NO|BAD)[^\r\n]*)", out)
    assert found, out
    return bytes(found[-1])
