"""FETCH while other sessions and programs rename and expunge message files (issue 10, item 6).

Under load, FETCHes with transcoding on failed whole with ``NO
[TRANSCODE-FAILED]``: another session's flag change renamed the file
(``base:2,S`` -> ``base:2,FS``), or an expunge removed it, between the
lookup and the open in the transcoding worker thread.  Here the server runs
on a real Maildir with a real keystore and the real S/MIME transcoder; the
transcodings are held (:class:`HeldRuns`) so that a rename or an expunge
lands exactly between the FETCH's lookup and the worker thread's open, and
then run in a real worker thread.

The behaviour pinned: a rename never fails a FETCH, transcoding off or on;
a message expunged before its file could be opened is left out, the others
are served whole, and the FETCH ends ``NO [EXPUNGEISSUED]`` (RFC 2180
section 4.1.2) -- never ``TRANSCODE-FAILED``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from tests.imap.harness import (
    Session,
    enable_smime,
    make_session,
    second_session,
    selected_session,
)
from tests.integration.transcoding import expected_inner
from tests.transcoders.smime_keys import SmimeIdentity, identity
from transcoder.imap.transcoding import TranscodingConfig
from transcoder.imap.view import ViewCache
from transcoder.keys.keystore import KeyStore
from transcoder.transcoders.registry import TranscoderRegistry
from transcoder.transcoders.smime import SmimeTranscoder

MESSAGES = [
    b"From: bob@example.org\r\nSubject: number %d\r\n\r\nThe body of message %d.\r\n" % (n, n)
    for n in (1, 2, 3)
]
_LITERAL = re.compile(rb"\* (\d+) FETCH \((?:UID \d+ )?BODY\[\] \{(\d+)\}\r\n")


class HeldRuns:
    """The view cache's ``run_blocking``: calls wait until :meth:`run`, then run in a worker thread.

    A real thread, as in the service: the message file is opened off the
    reactor thread.  Results are handed back on the test's (reactor) thread.
    """

    def __init__(self) -> None:
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...], defer.Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((f, args, d))
        return d

    def run(self) -> None:
        """Run everything held, and what their results asked for next, each in a thread."""
        while self.held:
            f, args, d = self.held.pop(0)
            outcome: list[Any] = []
            thread = threading.Thread(target=_run_into, args=(outcome, f, *args))
            thread.start()
            thread.join()
            (d.errback if isinstance(outcome[0], BaseException) else d.callback)(outcome[0])


def _run_into(outcome: list[Any], f: Callable[..., Any], *args: Any) -> None:
    """Append ``f(*args)``, or the exception it raised, to ``outcome``."""
    try:
        outcome.append(f(*args))
    except BaseException as e:  # handed back to the reactor thread
        outcome.append(e)


def message_file(session: Session, number: int) -> Path:
    """The file of INBOX message ``number`` (messages are delivered in order)."""
    cur = Path(session.server.account.root) / "cur"
    return sorted(cur.iterdir(), key=lambda p: p.name)[number - 1]


def rename_like_dovecot(path: Path, info: str = "FS") -> None:
    """Change the ``:2,`` flags of a message file, as another IMAP server's STORE does."""
    os.rename(path, path.with_name(path.name.partition(":")[0] + ":2," + info))


def bodies(out: bytes) -> dict[int, bytes]:
    """``sequence number -> BODY[] octets`` of the FETCH responses in ``out`` (UID first or not)."""
    found = {}
    for match in _LITERAL.finditer(out):
        start = match.end()
        found[int(match.group(1))] = out[start : start + int(match.group(2))]
    return found


def openssl_decrypt(view: bytes, who: SmimeIdentity, workdir: Path) -> bytes:
    """What ``openssl cms -decrypt`` makes of a served view: the inner entity."""
    (workdir / "view.eml").write_bytes(view)
    cert, key = who.write_pem(workdir)
    command = ["openssl", "cms", "-decrypt", "-in", str(workdir / "view.eml")]
    command += ["-recip", str(cert), "-inkey", str(key), "-out", str(workdir / "inner")]
    subprocess.run(command, check=True, capture_output=True)
    return (workdir / "inner").read_bytes()


@pytest.fixture
def plain(tmp_path: Path) -> Session:
    """alice, INBOX selected with MESSAGES, no transcoding."""
    return selected_session(tmp_path, *MESSAGES)


@pytest.fixture
def held() -> HeldRuns:
    """The transcodings of the transcoding session, held until run."""
    return HeldRuns()


@pytest.fixture
def smime(tmp_path: Path, held: HeldRuns) -> Iterator[Session]:
    """alice under MODE ALWAYS with her S/MIME certificate, INBOX selected with MESSAGES."""
    with KeyStore(tmp_path / "keys.db") as store:
        session = make_session(tmp_path)
        registry = TranscoderRegistry([SmimeTranscoder()])
        transcoding = TranscodingConfig(registry, ViewCache(tmp_path / "v", held))
        enable_smime(session, store, transcoding, identity("p256").cert_der)
        held.run()
        for data in MESSAGES:
            session.deliver(data)
        _, done = session.command(b"SELECT INBOX")
        assert b"OK" in done, done
        yield session


# -- transcoding off -----------------------------------------------------------------


def test_fetch_after_another_program_renamed_the_file(plain: Session) -> None:
    """A flag change by another program between SELECT and FETCH: BODY[] is served whole."""
    rename_like_dovecot(message_file(plain, 2))
    plain.send(b"f FETCH 2 (BODY[])\r\n")
    out = plain.output()
    assert b"f OK" in out and bodies(out) == {2: MESSAGES[1]}


def test_fetch_after_another_session_renamed_the_file(plain: Session) -> None:
    """A flag change by another session between SELECT and FETCH: BODY[] is served whole."""
    other = second_session(plain)
    other.command(b"SELECT INBOX")
    _, done = other.command(b"STORE 2 +FLAGS.SILENT (\\Flagged \\Seen)")
    assert b"OK" in done
    plain.send(b"f FETCH 1:3 (BODY.PEEK[])\r\n")
    out = plain.output()
    assert b"f OK" in out and bodies(out) == dict(enumerate(MESSAGES, 1))


def test_fetch_of_a_file_another_program_expunged(plain: Session) -> None:
    """Message 2's file removed by another program: 1 and 3 served, then NO [EXPUNGEISSUED]."""
    message_file(plain, 2).unlink()
    plain.send(b"f FETCH 1:3 (BODY.PEEK[])\r\n")
    out = plain.output()
    assert re.search(rb"^f NO \[EXPUNGEISSUED\] ", out, re.M), out
    assert bodies(out) == {1: MESSAGES[0], 3: MESSAGES[2]}


# -- transcoding on: the file moves while the worker thread is about to open it ------


@pytest.mark.parametrize("by", ["another program", "another session"])
def test_transcoded_fetch_survives_a_rename_before_the_open(
    smime: Session, held: HeldRuns, tmp_path: Path, by: str
) -> None:
    """A flag rename between lookup and the worker's open: the view is made and decrypts right."""
    smime.send(b"f FETCH 1:3 (BODY.PEEK[])\r\n")
    assert len(held.held) == 3  # three views waiting for a worker thread
    if by == "another program":
        rename_like_dovecot(message_file(smime, 2))
    else:
        other = second_session(smime)
        other.command(b"SELECT INBOX")
        other.command(b"STORE 2 +FLAGS.SILENT (\\Flagged)")
    held.run()
    out = smime.output()
    assert b"f OK" in out and b"TRANSCODE-FAILED" not in out, out
    served = bodies(out)
    assert sorted(served) == [1, 2, 3]
    for seq, view in served.items():
        inner = openssl_decrypt(view, identity("p256"), tmp_path)
        assert inner == expected_inner(MESSAGES[seq - 1])


def test_transcoded_fetch_of_a_message_expunged_mid_fetch(
    smime: Session, held: HeldRuns, tmp_path: Path
) -> None:
    """Another session expunges message 2 mid-FETCH: 1 and 3 served, NO [EXPUNGEISSUED]."""
    smime.send(b"f FETCH 1:3 (BODY.PEEK[])\r\n")
    other = second_session(smime)
    other.command(b"SELECT INBOX")
    other.command(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
    _, done = other.command(b"EXPUNGE")
    assert b"OK" in done
    held.run()
    out = smime.output()
    assert re.search(rb"^f NO \[EXPUNGEISSUED\] ", out, re.M), out
    served = bodies(out)
    assert sorted(served) == [1, 3]
    for seq, view in served.items():
        inner = openssl_decrypt(view, identity("p256"), tmp_path)
        assert inner == expected_inner(MESSAGES[seq - 1])
    lines, _ = smime.command(b"NOOP")
    assert b"* 2 EXPUNGE" in lines  # told once the FETCH is over (RFC 3501 7.4.1)


@pytest.mark.parametrize("items", [b"RFC822.SIZE", b"BODYSTRUCTURE", b"ENVELOPE FLAGS"])
def test_transcoded_sizes_of_a_message_another_program_expunged(
    smime: Session, items: bytes
) -> None:
    """Size and structure only (no transcoding): a removed file is left out, NO [EXPUNGEISSUED]."""
    message_file(smime, 2).unlink()
    smime.send(b"f FETCH 1:3 (" + items + b")\r\n")
    out = smime.output()
    assert re.search(rb"^f NO \[EXPUNGEISSUED\] ", out, re.M), out
    assert re.findall(rb"^\* (\d) FETCH", out, re.M) == [b"1", b"3"]
