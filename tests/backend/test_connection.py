"""The backend connection layer against a real Dovecot: commands, literals, errors, TLS, loss."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.backend.conftest import USERS
from tests.backend.tlsfiles import make_ca, make_server_files
from transcoder.backend.connection import (
    BackendAddress,
    BackendProtocol,
    BackendRefused,
    BackendSettings,
    BackendUnavailable,
    Literal,
    connect,
)
from transcoder.backend.dovecot import DovecotInstance
from transcoder.backend.response_syntax import Spool
from transcoder.errors import ConfigurationError

ALICE = "alice@example.org"


def _settings(
    instance: DovecotInstance,
    ca: Path | None = None,
    tls: bool = False,
    spool_dir: str | None = None,
) -> Any:
    url = f"imaps://localhost:{instance.tls_port}" if tls else f"imap://127.0.0.1:{instance.port}"
    ca_file = None if ca is None else str(ca)
    return BackendSettings(BackendAddress.parse(url), ca_file, spool_dir=spool_dir)


async def _login(instance: DovecotInstance, **kw: Any) -> BackendProtocol:
    proto = await connect(reactor, _settings(instance, **kw))
    await proto.command(b"LOGIN", Literal(ALICE.encode()), Literal(USERS[ALICE].encode()))
    return proto


@pytest_twisted.ensureDeferred
async def test_commands_collect_untagged_responses_and_spool_literals(
    dovecot: DovecotInstance, tmp_path: Path
) -> None:
    """SELECT's untagged data comes with its result; a large BODY[] arrives in a disk spool,
    an unnamed file in the settings' spool directory (--spool-dir)."""
    body = b"Subject: large\r\n\r\n" + b"0123456789abcdef" * 65536 + b"\r\n"
    dovecot.drop(ALICE, body, "Archive")
    proto = await _login(dovecot, spool_dir=str(tmp_path))
    try:
        selected = await proto.command(b"SELECT", b"Archive")
        assert selected.codes(b"UIDVALIDITY") and selected.data(b"EXISTS")
        result = await proto.command(b"UID FETCH 1:* (UID BODY.PEEK[])")
        (response,) = result.data(b"FETCH")
        spool = response.tokens[2][3]
        assert isinstance(spool, Spool) and not spool.in_memory
        where = os.readlink(f"/proc/self/fd/{spool._file.fileno()}")  # type: ignore[union-attr]
        assert where.startswith(str(tmp_path) + "/") and where.endswith("(deleted)"), where
        assert list(tmp_path.iterdir()) == []  # no name: nothing left behind after a crash
        with spool.open() as fp:
            assert fp.read() == body
    finally:
        proto.logout()


@pytest_twisted.ensureDeferred
async def test_a_refusal_carries_the_backends_response_code(dovecot: DovecotInstance) -> None:
    """A NO from the backend fails the command with BackendRefused and its RFC 5530 code."""
    proto = await _login(dovecot)
    try:
        with pytest.raises(BackendRefused) as refused:
            await proto.command(b"CREATE", b"INBOX")
        assert refused.value.code == "ALREADYEXISTS"
    finally:
        proto.logout()


@pytest_twisted.ensureDeferred
async def test_nothing_listens_is_unavailable() -> None:
    """No backend on the port: BackendUnavailable (the client's NO [UNAVAILABLE])."""
    from transcoder.backend.dovecot import free_port

    settings = BackendSettings(BackendAddress.parse(f"imap://127.0.0.1:{free_port()}"))
    with pytest.raises(BackendUnavailable):
        await connect(reactor, settings)


@pytest.fixture
def lone_dovecot() -> Iterator[DovecotInstance]:
    """A Dovecot of the test's own (this test stops it)."""
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    instance = DovecotInstance(directory / "dovecot", dict(USERS))
    try:
        with instance:
            yield instance
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_a_backend_stopped_mid_session_fails_commands_and_tells_the_owner(
    lone_dovecot: DovecotInstance,
) -> None:
    """Dovecot stopped: the owner's on_lost runs, later commands fail BackendUnavailable."""
    from twisted.internet import defer

    proto = await _login(lone_dovecot)
    lost: defer.Deferred[None] = defer.Deferred()
    proto.on_lost.append(lambda: lost.callback(None))
    await proto.command(b"SELECT", b"INBOX")
    os.kill(lone_dovecot.pid, signal.SIGTERM)  # not waited for: the reactor runs on
    await lost
    with pytest.raises(BackendUnavailable):
        await proto.command(b"NOOP")


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[tuple[DovecotInstance, Path]]:
    """A Dovecot with implicit TLS (a certificate for localhost from its own CA) and that CA."""
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    ca, cert, key = make_server_files(directory)
    instance = DovecotInstance(directory / "dovecot", dict(USERS), tls=(cert, key))
    try:
        with instance:
            yield instance, ca
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_imaps_verified_against_the_ca_file(
    tls_dovecot: tuple[DovecotInstance, Path],
) -> None:
    """imaps:// with --backend-ca naming the backend's CA: TLS is verified and LOGIN works."""
    instance, ca = tls_dovecot
    proto = await _login(instance, ca=ca, tls=True)
    try:
        result = await proto.command(b"NOOP")
        assert result.status.status == b"OK"
    finally:
        proto.logout()


@pytest_twisted.ensureDeferred
async def test_imaps_with_another_ca_is_refused(
    tls_dovecot: tuple[DovecotInstance, Path], tmp_path: Path
) -> None:
    """A backend certificate not chaining to --backend-ca: no connection (BackendUnavailable)."""
    instance, _ = tls_dovecot
    other, _, _ = make_ca(tmp_path, "someone-else")
    with pytest.raises(BackendUnavailable):
        await connect(reactor, _settings(instance, ca=other, tls=True))


def test_backend_urls() -> None:
    """Only imap://HOST:PORT and imaps://HOST:PORT are backends."""
    assert BackendAddress.parse("imaps://mail.example.org:993") == BackendAddress(
        True, "mail.example.org", 993
    )
    assert BackendAddress.parse("imap://[::1]:143") == BackendAddress(False, "::1", 143)
    for bad in ("imap://host", "http://host:80", "imap://host:0", "imap://a b:1", "host:143"):
        with pytest.raises(ConfigurationError):
            BackendAddress.parse(bad)


@pytest_twisted.ensureDeferred
async def test_idle_brings_changes_without_commands_and_yields_to_commands(
    dovecot: DovecotInstance,
) -> None:
    """While idling the backend's EXISTS arrives unasked; a command ends IDLE (DONE), gets
    its answer, and IDLE resumes."""
    from twisted.internet import defer, task

    proto = await _login(dovecot)
    heard: list[Any] = []
    arrived: list[defer.Deferred[None]] = []

    def listener(response: Any) -> None:
        heard.append(response)
        if getattr(response, "name", None) == b"EXISTS" and arrived:
            waiting = arrived.pop()
            if not waiting.called:
                waiting.callback(None)

    async def delivered(subject: bytes) -> None:
        waiting: defer.Deferred[None] = defer.Deferred()
        arrived.append(waiting)
        dovecot.drop(ALICE, b"Subject: " + subject + b"\r\n\r\nidle\r\n", "Batch")
        waiting.addTimeout(20, reactor)
        await waiting

    try:
        await proto.command(b"SELECT", b"Batch")
        proto.listener = listener
        proto.set_idle(True)
        await task.deferLater(reactor, 0.5, lambda: None)  # "+ idling"
        sent = proto.commands_sent
        await delivered(b"first")
        assert proto.commands_sent == sent  # nothing asked: the backend told, idling
        result = await proto.command(b"NOOP")
        assert result.status.status == b"OK"
        await task.deferLater(reactor, 0.5, lambda: None)  # idling again
        await delivered(b"second")
        proto.set_idle(False)
        assert (await proto.command(b"NOOP")).status.status == b"OK"
    finally:
        proto.logout()


def _dovecot_processes(pid: int) -> list[int]:
    """The master and every process under it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task_id in os.listdir(f"/proc/{current}/task"):
            children = Path(f"/proc/{current}/task/{task_id}/children").read_text().split()
            todo += [int(child) for child in children]
    return found


@pytest_twisted.ensureDeferred
async def test_a_backend_that_stops_answering_is_given_up(lone_dovecot: DovecotInstance) -> None:
    """Dovecot frozen (SIGSTOP): no answer within the command timeout -> BackendUnavailable,
    the connection closed and its owner told."""
    from twisted.internet import defer

    settings = BackendSettings(
        BackendAddress.parse(f"imap://127.0.0.1:{lone_dovecot.port}"), command_timeout=1.0
    )
    proto = await connect(reactor, settings)
    await proto.command(b"LOGIN", Literal(ALICE.encode()), Literal(USERS[ALICE].encode()))
    lost: defer.Deferred[None] = defer.Deferred()
    proto.on_lost.append(lambda: lost.callback(None))
    frozen = _dovecot_processes(lone_dovecot.pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(BackendUnavailable):
            await proto.command(b"NOOP")
        await lost
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
