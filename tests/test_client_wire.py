"""transcoder.client against a scripted IMAP peer on a real loopback socket.

The peer answers what a test scripts and records every octet the client sends,
so these tests pin down the client's side of the wire (literals, command order,
login choice, the handling of each kind of refusal) independently of our server.
"""

from __future__ import annotations

import base64
import fcntl
import io
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keys.certs import make_cert, pem
from transcoder.client import XKeyClient, XKeyConnectionError, XKeyError, main
from transcoder.client.cli import RESYNC_NOTE

#: A test's answer to one XKEY command: (untagged response lines, tagged status);
#: an empty status hangs up instead of answering.
Answer = tuple[list[bytes], bytes]
Script = Callable[[bytes, bytes | None], Answer]


def answer_ok(line: bytes, literal: bytes | None) -> Answer:
    """Accept every XKEY command, with no untagged responses."""
    return [], b"OK done"


@dataclass
class ScriptedPeer:
    """An IMAP peer for one connection that answers XKEY from ``script``."""

    script: Script = answer_ok
    capabilities: bytes = b"IMAP4rev1 XKEY"
    refuse_literal: bytes | None = None
    host: str = "127.0.0.1"
    commands: list[bytes] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> int:
        self.listener = socket.create_server((self.host, 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return int(self.listener.getsockname()[1])

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as rfile:
            conn.sendall(b"* OK scripted peer ready\r\n")
            while line := rfile.readline():
                if not self._answer(conn, rfile, line.rstrip(b"\r\n")):
                    break
        self.listener.close()

    def _answer(self, conn: socket.socket, rfile: io.BufferedReader, line: bytes) -> bool:
        self.commands.append(line)
        tag, _, rest = line.partition(b" ")
        verb = rest.split(b" ", 1)[0].upper()
        literal = None
        if rest.endswith(b"}"):
            if self.refuse_literal is not None:
                conn.sendall(tag + b" " + self.refuse_literal + b"\r\n")
                return True
            size = int(rest[rest.rindex(b"{") + 1 : -1])
            conn.sendall(b"+ go ahead\r\n")
            literal = rfile.read(size)
            self.literals.append(literal)
            rfile.readline()
        if verb == b"CAPABILITY":
            untagged, status = [b"* CAPABILITY " + self.capabilities], b"OK listed"
        elif verb == b"LOGIN":
            user, password = rest.split(b" ")[1:3]
            self.logins.append((user.strip(b'"').decode(), password.strip(b'"').decode()))
            untagged, status = [], b"OK logged in"
        elif verb == b"AUTHENTICATE":
            conn.sendall(b"+ \r\n")
            _, user, password = base64.b64decode(rfile.readline()).split(b"\0")
            self.logins.append((user.decode(), password.decode()))
            untagged, status = [], b"OK logged in"
        elif verb == b"LOGOUT":
            conn.sendall(b"* BYE bye\r\n" + tag + b" OK logged out\r\n")
            return False
        else:
            untagged, status = self.script(rest, literal)
        if not status:
            return False  # the script hangs up without answering
        conn.sendall(b"".join(u + b"\r\n" for u in untagged) + tag + b" " + status + b"\r\n")
        return True

    def xkey_commands(self) -> list[bytes]:
        """The XKEY command lines received, without their tags."""
        return [c.split(b" ", 1)[1] for c in self.commands if b" XKEY " in c]


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    scripted = ScriptedPeer()
    yield scripted
    if hasattr(scripted, "thread"):
        scripted.thread.join(timeout=5)


def connect(peer: ScriptedPeer, password: str = "pw") -> XKeyClient:
    port = peer.start()
    return XKeyClient.connect(peer.host, port, "alice@example.org", password, "plain")


def plain(argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` with ``--plain`` unless it chooses TLS (the scripted peer speaks no TLS)."""
    return list(argv) if "--starttls" in argv or "--tls" in argv else ["--plain", *argv]


def never_asked(question: str) -> str:
    raise AssertionError(f"asked {question!r}")


def cli(
    peer: ScriptedPeer, *argv: str, confirm: Callable[[str], str] = never_asked
) -> tuple[int, str, str]:
    """Run the CLI in-process against the peer; return (status, stdout, stderr)."""
    port = peer.start()
    out, err = io.StringIO(), io.StringIO()
    status = main(
        ["--host", peer.host, "--port", str(port), "--user", "alice@example.org", *plain(argv)],
        confirm=confirm,
        environ={"TRANSCODER_PASSWORD": "pw"},
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


def test_provision_sends_raw_octets_as_synchronizing_literal(peer: ScriptedPeer) -> None:
    """PUT carries the key as a {n} literal of exactly its octets (NUL, CRLF, 8-bit intact)."""
    key = bytes(range(256)) + b"\r\n\r\n"
    with connect(peer) as client:
        assert client.provision(key) is None  # the peer describes no stored key
    assert peer.xkey_commands() == [b"XKEY PUT {%d}" % len(key)]
    assert peer.literals == [key]


def test_literal_refused_before_continuation(peer: ScriptedPeer) -> None:
    """A NO instead of the continuation (XKEY-TOOBIG) raises, sends nothing; the session goes on."""
    peer.refuse_literal = b"NO [XKEY-TOOBIG] key too large"
    with connect(peer) as client:
        with pytest.raises(XKeyError) as caught:
            client.provision(b"x" * 1000)
        assert (caught.value.code, caught.value.text) == ("XKEY-TOOBIG", "key too large")
        peer.refuse_literal = None
        assert client.keys() == []
    assert peer.literals == []


def test_keys_parses_literal_strings_from_the_server(peer: ScriptedPeer) -> None:
    """Keys come back intact when the server sends an address as a literal."""
    response = (
        b'* XKEY (FORMAT OPENPGP FINGERPRINT "AB12" ADDRESSES ({17}\r\nalice@example.org) '
        b"NOT-AFTER NIL USAGE (ENCRYPT) STATUS ACTIVE)"
    )
    peer.script = lambda line, literal: ([response], b"OK listed")
    with connect(peer) as client:
        (key,) = client.keys()
    assert (key.fingerprint, key.addresses, key.status) == (
        "AB12",
        ("alice@example.org",),
        "ACTIVE",
    )


def test_no_with_code_exits_1_with_one_line(peer: ScriptedPeer) -> None:
    """A tagged NO [code] becomes exit 1 and ``transcoder-client: CODE: text`` on stderr."""
    peer.script = lambda line, literal: (
        [],
        b"NO [XKEY-ADDRESS] certificate is for bob@example.org",
    )
    status, out, err = cli(peer, "provision", "/dev/null")
    assert (status, out) == (1, "")
    assert err == "transcoder-client: XKEY-ADDRESS: certificate is for bob@example.org\n"


def test_bad_is_an_error_with_its_code(peer: ScriptedPeer) -> None:
    """A tagged BAD raises XKeyError with response BAD and the server's code and text."""
    peer.script = lambda line, literal: ([], b"BAD [CLIENTBUG] unknown XKEY subcommand")
    with connect(peer) as client, pytest.raises(XKeyError) as caught:
        client.policy()
    assert (caught.value.response, caught.value.code) == ("BAD", "CLIENTBUG")
    assert caught.value.text == "unknown XKEY subcommand"


def test_server_without_xkey_exits_1(peer: ScriptedPeer) -> None:
    """Against a server that does not advertise XKEY the CLI says so and exits 1."""
    peer.capabilities = b"IMAP4rev1 IDLE"
    status, _, err = cli(peer, "keys")
    assert status == 1
    assert (
        err
        == "transcoder-client: UNSUPPORTED: the server does not offer XKEY (no XKEY capability)\n"
    )
    assert peer.xkey_commands() == []


def test_malformed_response_exits_1(peer: ScriptedPeer) -> None:
    """A malformed untagged XKEY response is reported as a PROTOCOL error, exit 1."""
    peer.script = lambda line, literal: ([b'* XKEY (FORMAT SMIME FINGERPRINT "ab'], b"OK done")
    status, _, err = cli(peer, "keys", "--json")
    assert status == 1
    assert err.startswith("transcoder-client: PROTOCOL: malformed server response: unterminated")


def test_set_policy_sends_format_then_mode_then_reads_policy(peer: ScriptedPeer) -> None:
    """``policy --mode --format`` reads the policy (for the resync note), sets FORMAT before
    MODE, then prints the policy in force."""
    peer.script = lambda line, literal: (
        [b"* XKEY POLICY (MODE ALWAYS FORMAT OPENPGP)"] if line == b"XKEY POLICY" else [],
        b"OK done",
    )
    status, out, _ = cli(peer, "policy", "--mode", "always", "--format", "openpgp")
    assert (status, out) == (0, "mode: ALWAYS\nformat: OPENPGP\n")
    assert peer.xkey_commands() == [
        b"XKEY POLICY",
        b"XKEY POLICY FORMAT OPENPGP",
        b"XKEY POLICY MODE ALWAYS",
        b"XKEY POLICY",
    ]


def test_retire_sends_compact_fingerprint(peer: ScriptedPeer) -> None:
    """``retire`` sends the fingerprint as one hex atom, whatever spacing was pasted; then it
    reads the policy: under MODE ALWAYS it notes the resync retiring costs."""
    peer.script = lambda line, literal: (
        [b"* XKEY POLICY (MODE ALWAYS FORMAT SMIME)"] if line == b"XKEY POLICY" else [],
        b"OK done",
    )
    status, out, err = cli(peer, "retire", "AB CD:EF")
    assert (status, out, err) == (0, "retired AB CD:EF\n", RESYNC_NOTE + "\n")
    assert peer.xkey_commands() == [b"XKEY DELETE ABCDEF", b"XKEY POLICY"]


def test_authenticate_plain_carries_utf8_password(peer: ScriptedPeer) -> None:
    """With AUTH=PLAIN offered, a non-ASCII password arrives intact (RFC 4616)."""
    peer.capabilities = b"IMAP4rev1 AUTH=PLAIN XKEY"
    with connect(peer, password='pässwörd "quoted"'):
        pass
    assert peer.logins == [("alice@example.org", 'pässwörd "quoted"')]


def test_password_from_prompt(peer: ScriptedPeer) -> None:
    """Without $TRANSCODER_PASSWORD the CLI prompts, naming the user, and logs in with that."""
    port = peer.start()
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return "typed"

    argv = ["--host", "127.0.0.1", "--port", str(port), "--user", "alice@example.org", "keys"]
    assert main(plain(argv), environ={}, prompt=prompt, stdout=io.StringIO()) == 0
    assert prompts == ["Password for alice@example.org: "]
    assert peer.logins == [("alice@example.org", "typed")]


def test_connection_refused_exits_2() -> None:
    """A port nobody listens on is a connection failure: exit 2, one line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = io.StringIO()
    argv = ["--host", "127.0.0.1", "--port", str(port), "--user", "u", "keys"]
    assert main(argv, environ={"TRANSCODER_PASSWORD": "pw"}, stderr=err) == 2
    assert err.getvalue().startswith(
        f"transcoder-client: CONNECT: cannot connect to 127.0.0.1:{port}"
    )


def test_starttls_unsupported_exits_2(peer: ScriptedPeer) -> None:
    """--starttls against a server without STARTTLS fails closed (exit 2) before LOGIN."""
    status, _, err = cli(peer, "--starttls", "keys")
    assert status == 2
    assert err.startswith("transcoder-client: TLS: STARTTLS with 127.0.0.1")
    assert peer.logins == []


_SIOCGIFADDR = 0x8915  # Linux <linux/sockios.h>: an interface's IPv4 address


def _non_loopback_address() -> str | None:
    """An IPv4 address of one of this machine's interfaces that is not loopback, if any.

    Read from the interfaces themselves, not from a route, so a machine
    without network access still has one as long as an interface is up.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # down, or no IPv4 address
            address = socket.inet_ntoa(answer[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                return address
    return None


def test_plaintext_password_never_sent_to_non_loopback_peer(peer: ScriptedPeer) -> None:
    """Without TLS the password is refused to a non-loopback peer: exit 2, no LOGIN on the wire."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    peer.host = address
    status, _, err = cli(peer, "keys")
    assert status == 2
    expected = f"PRIVACYREQUIRED: refusing to send the password unencrypted to {address}"
    assert err.startswith(f"transcoder-client: {expected}")
    assert peer.logins == []
    assert not any(b"LOGIN" in c or b"AUTHENTICATE" in c for c in peer.commands)


def test_connection_lost_mid_command(peer: ScriptedPeer) -> None:
    """A server that hangs up mid-command raises XKeyConnectionError, not an imaplib error."""

    peer.script = lambda line, literal: ([], b"")
    with connect(peer) as client, pytest.raises(XKeyConnectionError) as caught:
        client.keys()
    assert caught.value.code == "CONNECTION"


def test_non_ascii_password_without_plain_mechanism(peer: ScriptedPeer) -> None:
    """With only LOGIN available a non-ASCII password is refused locally, never half-sent."""
    with pytest.raises(XKeyConnectionError, match="non-ASCII") as caught:
        connect(peer, password="pässwort")
    assert caught.value.code == "AUTHENTICATIONFAILED"
    assert not any(b"LOGIN" in c for c in peer.commands)


# -- provision: asking before a key in force is replaced ----------------------------------

ACTIVE_OLD = (
    b'* XKEY (FORMAT SMIME FINGERPRINT "0123abcd" ADDRESSES ("alice@example.org") '
    b"NOT-AFTER NIL USAGE (ENCRYPT SIGN) STATUS ACTIVE)"
)


@pytest.fixture(scope="module")
def cert_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A certificate file for alice and its fingerprint (SHA-256 of the DER)."""
    cert = make_cert(ec.generate_private_key(ec.SECP256R1()))
    path = tmp_path_factory.mktemp("wire") / "alice.pem"
    path.write_bytes(pem(cert))
    return str(path), cert.fingerprint(hashes.SHA256()).hex()


def replacing_server(fingerprint: str, mode: bytes = b"OFF") -> Script:
    """LIST shows an active certificate; PUT stores ``fingerprint`` and reports the old one."""

    def script(line: bytes, literal: bytes | None) -> Answer:
        if line == b"XKEY LIST":
            return [ACTIVE_OLD], b"OK listed"
        if line == b"XKEY POLICY":
            return [b"* XKEY POLICY (MODE " + mode + b" FORMAT SMIME)"], b"OK shown"
        stored = ACTIVE_OLD.replace(b"0123abcd", fingerprint.encode())
        return [stored, ACTIVE_OLD.replace(b"STATUS ACTIVE", b"STATUS RETIRED")], b"OK put"

    return script


@pytest.mark.parametrize("answer", ["n\n", "\n", "no\n"])
def test_provision_asks_and_stores_nothing_when_declined(
    peer: ScriptedPeer, cert_file: tuple[str, str], answer: str
) -> None:
    """A certificate that would retire the active one: the active key is shown, the user is
    asked; anything but yes sends no PUT and exits 1."""
    path, fingerprint = cert_file
    peer.script = replacing_server(fingerprint)
    questions: list[str] = []

    def confirm(question: str) -> str:
        questions.append(question)
        return answer

    status, out, err = cli(peer, "provision", path, confirm=confirm)
    assert (status, out) == (1, "")
    assert questions == ["Replace it? [y/N] "]
    assert "this key replaces your active SMIME key" in err and "0123abcd" in err
    assert err.endswith("not replaced, nothing stored (pass --replace to replace without asking)\n")
    assert peer.xkey_commands() == [b"XKEY LIST", b"XKEY POLICY"]
    assert peer.literals == []


def test_provision_replaces_when_confirmed_and_shows_what_it_superseded(
    peer: ScriptedPeer, cert_file: tuple[str, str]
) -> None:
    """Answered yes: PUT is sent; stdout shows the stored key and the superseded one. Under
    MODE ALWAYS the question says what the replacement costs, and the resync note follows."""
    path, fingerprint = cert_file
    peer.script = replacing_server(fingerprint, mode=b"ALWAYS")
    status, out, err = cli(peer, "provision", path, confirm=lambda question: "y\n")
    assert status == 0, err
    stored, superseded = out.splitlines()
    assert stored.startswith(f"stored:     {fingerprint}  SMIME    ACTIVE ")
    assert superseded.startswith("superseded: 0123abcd") and " RETIRED " in superseded
    assert "a full resync" in err and err.endswith(RESYNC_NOTE + "\n")
    size = len(Path(path).read_bytes())
    assert peer.xkey_commands()[:3] == [b"XKEY LIST", b"XKEY POLICY", b"XKEY PUT {%d}" % size]


def test_provision_replace_skips_the_question(
    peer: ScriptedPeer, cert_file: tuple[str, str]
) -> None:
    """--replace: no LIST, no question, straight to PUT."""
    path, fingerprint = cert_file
    peer.script = replacing_server(fingerprint)
    status, out, _ = cli(peer, "provision", path, "--replace")
    assert status == 0 and out.startswith("stored:")
    assert peer.xkey_commands()[0].startswith(b"XKEY PUT {")


def test_provision_without_terminal_refuses_to_replace(
    peer: ScriptedPeer, cert_file: tuple[str, str]
) -> None:
    """No terminal to ask on (a script): nothing stored, exit 1, and the hint --replace."""
    path, fingerprint = cert_file
    peer.script = replacing_server(fingerprint)

    def no_terminal(question: str) -> str:
        raise EOFError

    status, _, err = cli(peer, "provision", path, confirm=no_terminal)
    assert status == 1 and "no terminal to ask on; pass --replace" in err
    assert peer.literals == []


def test_refreshing_the_active_key_asks_nothing(
    peer: ScriptedPeer, cert_file: tuple[str, str]
) -> None:
    """The key in force uploaded again (a refresh) replaces nothing: no question."""
    path, fingerprint = cert_file
    listed = ACTIVE_OLD.replace(b"0123abcd", fingerprint.encode())
    policy = b"* XKEY POLICY (MODE OFF FORMAT SMIME)"
    peer.script = lambda line, literal: ([policy if line == b"XKEY POLICY" else listed], b"OK ok")
    status, out, _ = cli(peer, "provision", path)
    assert status == 0 and out.startswith(f"stored:     {fingerprint}")
