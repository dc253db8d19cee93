"""A policy change reaches every open session before its next FETCH (issue 8, finding 3).

The attack: a session that fetched while the policy was OFF goes on being
served plaintext after MODE ALWAYS was set elsewhere -- the decision had
been cached under the client's tag, and a client that sends every command
with the same tag kept it.  Here session A speaks raw IMAP with the tag
``a`` on every command; the policy is changed by session B (``XKEY POLICY``)
or by ``transcoder-admin policy`` in another process.  A's very next
command must not be served under the old policy: it is answered ``* BYE
[UNAVAILABLE]`` and the connection closes (issue 9: its views changed, and
the UIDVALIDITY A was shown with them); reconnected, A sees a new
UIDVALIDITY and ciphertext that ``openssl cms -decrypt`` opens under ALWAYS,
the stored octets under OFF.  A session that leaves the mailbox itself
(UNSELECT, SELECT) goes on and sees the same.
"""

from __future__ import annotations

import contextlib
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import Party, make_party
from tests.integration.conftest import PASSWORD, RunningServer, admin
from tests.integration.transcoding import (
    SMIME,
    append,
    check_inner,
    login,
    openssl_decrypt,
    provision,
    running_server,
    set_mode,
)

pytestmark = pytest.mark.integration

CAROL = "carol@example.org"
MARKER = f"POLICY-CANARY-{uuid.uuid4().hex}".encode()
STORED = (
    b"From: dave@example.org\r\nTo: carol@example.org\r\nSubject: payroll\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe figure is " + MARKER + b".\r\n"
)


class SameTagClient:
    """A bare IMAP client that sends every command with the same tag, as simple clients do."""

    TAG = b"a"

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")

    def command(self, line: bytes) -> bytes:
        """Send ``a <line>``; everything the server answered, literals included, up to ``a OK``."""
        self.sock.sendall(self.TAG + b" " + line + b"\r\n")
        answer = bytearray()
        while True:
            response = self.file.readline()
            if not response:
                raise ConnectionError(f"server closed the connection after: {bytes(answer)!r}")
            answer += response
            literal = re.search(rb"\{(\d+)\}\r\n\Z", response)
            if literal:
                answer += self.file.read(int(literal.group(1)))
            elif response.startswith(self.TAG + b" "):
                assert response.startswith(self.TAG + b" OK"), bytes(answer)
                return bytes(answer)

    def body(self, uid: int) -> bytes:
        """``UID FETCH uid (BODY.PEEK[])``: the literal."""
        answer = self.command(b"UID FETCH %d (BODY.PEEK[])" % uid)
        match = re.search(rb"BODY\[\] \{(\d+)\}\r\n", answer)
        assert match, answer
        return answer[match.end() : match.end() + int(match.group(1))]

    def ended(self, line: bytes) -> bytes:
        """Send ``a <line>``: the answer is only ``* BYE [UNAVAILABLE]``, then the server closes."""
        self.sock.sendall(self.TAG + b" " + line + b"\r\n")
        answer = self.file.read()  # up to the end of the connection
        assert answer.startswith(b"* BYE [UNAVAILABLE] ") and answer.count(b"\r\n") == 1, answer
        return answer

    def uidvalidity(self) -> int:
        """``SELECT INBOX``; the UIDVALIDITY it presents."""
        match = re.search(rb"\[UIDVALIDITY (\d+)\]", self.command(b"SELECT INBOX"))
        assert match
        return int(match.group(1))

    def close(self) -> None:
        """LOGOUT (unless the server ended the session) and close the socket."""
        with contextlib.suppress(OSError):  # ended with BYE already
            self.command(b"LOGOUT")
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("policy-change")


@pytest.fixture(scope="module")
def carol(workdir: Path) -> Party:
    """carol@example.org's RSA key and certificate."""
    return make_party(workdir, "carol", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def server(workdir: Path, carol: Party) -> Iterator[RunningServer]:
    """A server where carol has her certificate stored and one message holding the marker."""
    with running_server(workdir / "server", [CAROL]) as running:
        provision(running, CAROL, carol.cert_der, SMIME)
        imap = login(running, CAROL)
        assert append(imap, STORED) == 1
        imap.logout()
        yield running


def selected(server: RunningServer) -> SameTagClient:
    """A new session of carol, every command tagged ``a``, INBOX selected."""
    client = SameTagClient(server.imap_port)
    client.command(b'LOGIN "%s" "%s"' % (CAROL.encode(), PASSWORD.encode()))
    client.command(b"SELECT INBOX")
    return client


@pytest.fixture
def session_a(server: RunningServer) -> Iterator[SameTagClient]:
    """Session A: logged in, INBOX selected, every command tagged ``a``; policy OFF at first."""
    set_mode(server, CAROL, "OFF")
    client = selected(server)
    assert client.body(1) == STORED  # policy OFF: the stored octets
    yield client
    client.close()


def assert_ciphertext(view: bytes, carol: Party, workdir: Path) -> None:
    """``view`` is the S/MIME view of STORED: no marker in clear, and openssl opens it."""
    assert MARKER not in view
    check_inner(openssl_decrypt(view, carol, workdir), STORED, view)


def test_xkey_policy_in_another_session_reaches_the_next_fetch(
    server: RunningServer, session_a: SameTagClient, carol: Party, workdir: Path
) -> None:
    """MODE ALWAYS set by session B: A's next FETCH gets BYE; reconnected, it is ciphertext."""
    before = session_a.uidvalidity()
    set_mode(server, CAROL, "ALWAYS")
    assert MARKER not in session_a.ended(b"UID FETCH 1 (BODY.PEEK[])")
    again = selected(server)
    assert_ciphertext(again.body(1), carol, workdir)
    assert again.uidvalidity() != before
    set_mode(server, CAROL, "OFF")
    again.ended(b"NOOP")
    again.close()
    last = selected(server)
    assert last.body(1) == STORED
    last.close()


def test_policy_change_reaches_a_reselected_mailbox(
    server: RunningServer, session_a: SameTagClient, carol: Party, workdir: Path
) -> None:
    """MODE ALWAYS set by session B, then A runs UNSELECT and SELECT: its FETCH is ciphertext."""
    set_mode(server, CAROL, "ALWAYS")
    session_a.command(b"UNSELECT")
    session_a.command(b"SELECT INBOX")
    assert_ciphertext(session_a.body(1), carol, workdir)


def test_admin_policy_from_another_process_reaches_the_next_fetch(
    server: RunningServer, session_a: SameTagClient, carol: Party, workdir: Path
) -> None:
    """``transcoder-admin policy`` in another process: A's next FETCH gets BYE, then follows."""
    done = admin(server.data, "policy", CAROL, "--mode", "always")
    assert done.returncode == 0, done.stderr
    assert MARKER not in session_a.ended(b"UID FETCH 1 (BODY.PEEK[])")
    again = selected(server)
    assert_ciphertext(again.body(1), carol, workdir)
    done = admin(server.data, "policy", CAROL, "--mode", "off")
    assert done.returncode == 0, done.stderr
    assert MARKER not in again.ended(b"UID FETCH 1 (BODY.PEEK[])")
    again.close()
    last = selected(server)
    assert last.body(1) == STORED
    last.close()
