"""An unexpected error while transcoding fails closed as NO [TRANSCODE-FAILED] (issue 8, finding 9).

The attack surface: a transcoder (a third-party plugin above all) that
raises something the server did not plan for.  The answer must stay the
fail-closed one of docs/design.md invariant 3 -- ``NO [TRANSCODE-FAILED]`` with
the opaque text -- not ``NO [SERVERBUG]``, nothing of the message sent,
``\\Seen`` not set, and the error's detail in the server log only.  The
transcoder here is a real plugin distribution, found through its entry
point, on a server with a real keystore (SQLite) and a real Maildir, driven
over the protocol with its key provisioned by XKEY.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.logger import eventAsText

from tests.imap.harness import Session, enable_smime, make_session
from tests.keys.certs import der, key_usage, make_cert
from tests.transcoders.plugins import install_plugin, unique
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.errors import OPAQUE_TEXT
from transcoder.transcoders.registry import GROUP, TranscoderRegistry

#: In the plugin's exception only: it must reach the log and never the client.
DETAIL = f"PLUGIN-DETAIL-{uuid.uuid4().hex}"
MARKER = b"STORED-BODY-MARKER-b41d"
MESSAGE = b"From: bob@example.org\r\nSubject: hi\r\n\r\nThe body: " + MARKER + b"\r\n"

EXPLODING_SOURCE = f'''
from zope.interface import implementer
from transcoder.keys.model import KeyFormat
from transcoder.transcoders.interfaces import ITranscoder


@implementer(ITranscoder)
class Exploding:
    """Serves any S/MIME key, then fails in a way no transcoder is meant to."""

    name = "exploding"
    media_type = "application/x-exploding"
    key_format = KeyFormat.SMIME
    settings_id = "v1"

    def can_serve(self, keys):
        return True

    def transcode(self, request, out):
        out.write(request.source.read(64))  # some of the message already written out
        raise RuntimeError("{DETAIL}: internal state")
'''


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TranscoderRegistry:
    """A registry holding the installed ``exploding`` plugin, found by its entry point."""
    module = unique("exploding_transcoder")
    target = f"{module}:Exploding"
    install_plugin(tmp_path / "site", {module: EXPLODING_SOURCE}, {"exploding": target})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = [ep for ep in entry_points(group=GROUP) if ep.value == target]
    registry, failures = TranscoderRegistry.from_entry_points([], found)
    assert registry.names() == ("exploding",) and not failures
    return registry


@pytest.fixture
def session(tmp_path: Path, registry: TranscoderRegistry) -> Iterator[Session]:
    """alice, INBOX selected with MESSAGE, her certificate stored by XKEY, MODE ALWAYS."""
    with KeyStore(tmp_path / "keys.db") as store:
        session = make_session(tmp_path)
        cache = ViewCache(tmp_path / "views", defer.maybeDeferred)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = der(make_cert(key, usage=key_usage(key_agreement=True)))
        enable_smime(session, store, TranscodingConfig(registry, cache), cert)
        session.deliver(MESSAGE)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        yield session


@pytest.mark.parametrize("items", [b"BODY[]", b"RFC822", b"BODY[TEXT] FLAGS", b"RFC822.SIZE"])
def test_unexpected_transcoder_error_is_transcode_failed(
    session: Session, logged: list[dict[str, Any]], items: bytes
) -> None:
    """RuntimeError in a plugin: tagged NO [TRANSCODE-FAILED], no message octets, no \\Seen."""
    session.send(b"f FETCH 1 (" + items + b")\r\n")
    out = session.output()
    assert re.search(rb"^f NO \[TRANSCODE-FAILED\] " + OPAQUE_TEXT.encode() + rb"\r\n", out, re.M)
    assert MARKER not in out and b"From: bob" not in out
    assert DETAIL.encode() not in out and b"RuntimeError" not in out
    flags, done = session.command(b"FETCH 1 (FLAGS)")
    assert b"OK" in done and b"\\Seen" not in b"".join(flags)
    assert any(DETAIL in eventAsText(e) for e in logged)
