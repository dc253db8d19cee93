"""A view that changes is announced (issue 9), on the real server with imapclient.

A mail client keeps every message it fetched under (mailbox, UIDVALIDITY,
UID) and never fetches it again while the mailbox shows the same
UIDVALIDITY.  :class:`CachingClient` does just that -- and, to check the
server, fetches everything anyway and compares: the copy it holds must be
the octets the server serves now.  Keys and policy change through XKEY,
``transcoder-admin`` in another process and a server restart in between.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from imapclient import IMAPClient

from tests.cms.parties import Party, make_party
from tests.integration.conftest import PASSWORD, RunningServer, admin
from tests.integration.test_client import client as transcoder_client
from tests.integration.transcoding import login, running_server
from tests.keyfactory import PgpKeys
from transcoder.client import XKeyClient
from transcoder.client.cli import RESYNC_NOTE

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"
BOB = "bob@example.org"
MESSAGES = [
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: one\r\n\r\nfirst\r\n",
    b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: two\r\n\r\nsecond\r\n",
]


def connect(server: RunningServer, address: str = ALICE) -> IMAPClient:
    """An imapclient session of ``address`` (plain LOGIN is allowed from loopback)."""
    imap = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False, timeout=60)
    imap.login(address, PASSWORD)
    return imap


class CachingClient:
    """A mail client's cache: ``(mailbox, UIDVALIDITY, UID) -> octets``, kept for good."""

    def __init__(self, address: str = ALICE) -> None:
        self.address = address
        self.cache: dict[tuple[str, int, int], bytes] = {}
        self.validities: dict[str, list[int]] = {}

    def sync(self, server: RunningServer, mailbox: str = "INBOX") -> int:
        """Resynchronise ``mailbox`` as a client does; the UIDVALIDITY it showed.

        Copies under another UIDVALIDITY are dropped (RFC 3501 2.3.1.1).  A
        copy kept under this one must be what the server serves now.
        """
        imap = connect(server, self.address)
        try:
            validity = int(imap.select_folder(mailbox, readonly=True)[b"UIDVALIDITY"])
            self.cache = {
                k: v for k, v in self.cache.items() if k[0] != mailbox or k[1] == validity
            }
            uids = imap.search("ALL")
            served = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        finally:
            imap.logout()
        for uid, data in served.items():
            kept = self.cache.setdefault((mailbox, validity, uid), data[b"BODY[]"])
            assert kept == data[b"BODY[]"], f"uid {uid}: a copy the server no longer serves"
        self.validities.setdefault(mailbox, []).append(validity)
        return validity

    def same(self, server: RunningServer, mailbox: str = "INBOX") -> None:
        """Sync after something that changes no view: the UIDVALIDITY and copies stay."""
        before = self.validities[mailbox][-1]
        assert self.sync(server, mailbox) == before

    def new(self, server: RunningServer, mailbox: str = "INBOX") -> None:
        """Sync after the views changed: a UIDVALIDITY this mailbox never showed before."""
        seen = list(self.validities[mailbox])
        validity = self.sync(server, mailbox)
        assert validity not in seen and validity > max(seen), (validity, seen)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("view-epochs")


@pytest.fixture(scope="module")
def certs(workdir: Path) -> tuple[Party, Party]:
    """Two S/MIME certificates of alice's (RSA, then P-256)."""
    (workdir / "p256").mkdir()
    return (
        make_party(workdir, "alice", rsa.generate_private_key(65537, 2048)),
        make_party(workdir / "p256", "alice", ec.generate_private_key(ec.SECP256R1())),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server with alice and bob (MODE OFF), each with two messages in INBOX, and
    alice's mailbox Box."""
    with running_server(tmp_path, [ALICE, BOB]) as running:
        for address in (ALICE, BOB):
            imap = connect(running, address)
            for message in MESSAGES:
                imap.append("INBOX", message)
            imap.logout()
        imap = connect(running)
        imap.create_folder("Box")
        imap.logout()
        yield running


def xkey(server: RunningServer) -> XKeyClient:
    """An XKEY client on a new session of alice's (authenticated state)."""
    return XKeyClient.connect("127.0.0.1", server.imap_port, ALICE, PASSWORD, "plain")


def stored_validity(server: RunningServer, mailbox: str = "") -> int:
    """The UIDVALIDITY the Maildir's uid list holds (``mailbox``: "" for INBOX, ".Box")."""
    head = (server.data / "mail" / ALICE / mailbox / "transcoder-uidlist").read_text()
    return int(re.search(r" V(\d+) ", head.splitlines()[0]).group(1))  # type: ignore[union-attr]


def test_cached_copies_are_always_what_the_server_serves(
    server: RunningServer, certs: tuple[Party, Party], pgp_keys: PgpKeys, workdir: Path
) -> None:
    """Over XKEY, admin and restart changes, a kept copy is never one the server would not serve."""
    first, second = certs
    client = CachingClient()
    client.sync(server)
    client.sync(server, "Box")
    with xkey(server) as keys:  # under MODE OFF: no view changes
        keys.provision(first.cert_der)
        keys.provision(pgp_keys.alice_25519)
    client.same(server)
    with xkey(server) as keys:
        keys.set_policy(format="SMIME", mode="ALWAYS")
    client.new(server)
    client.new(server, "Box")
    assert all(b"application/pkcs7-mime" in v for v in client.cache.values())
    client.same(server)  # a view at one epoch stays what it was
    server.restart()
    client.same(server)
    with xkey(server) as keys:
        keys.set_policy(format="OPENPGP")
    client.new(server)
    for command in (
        ["policy", ALICE, "--format", "smime"],
        ["key", "import", ALICE, str(second.cert_path)],
        ["policy", ALICE, "--mode", "off"],
    ):
        done = admin(server.data, *command)
        assert done.returncode == 0, done.stderr
        client.new(server)
        if command[0] == "key":
            with xkey(server) as keys:  # XKEY PUT of a new key under MODE ALWAYS
                keys.provision(first.cert_der)
            client.new(server)
    assert sorted(client.cache.values()) == sorted(MESSAGES)
    client.new(server, "Box")
    with xkey(server) as keys:  # MODE OFF again: a key of the format changes nothing
        keys.provision(first.cert_der)
    client.same(server)
    server.restart()
    client.same(server)
    client.same(server, "Box")


def test_appenduid_and_copyuid_name_the_uidvalidity_select_shows(
    server: RunningServer, certs: tuple[Party, Party]
) -> None:
    """After a change, APPENDUID and COPYUID carry the presented value, not the Maildir's."""
    with xkey(server) as keys:
        keys.provision(certs[0].cert_der)
        keys.set_policy(mode="ALWAYS")
    imap = connect(server)
    box = int(imap.select_folder("Box")[b"UIDVALIDITY"])
    inbox = int(imap.select_folder("INBOX")[b"UIDVALIDITY"])
    assert (inbox, box) != (stored_validity(server), stored_validity(server, ".Box"))
    appended = imap.append("Box", MESSAGES[0])
    assert re.search(rb"\[APPENDUID %d \d+\]" % box, appended), appended
    status = imap.folder_status("INBOX", [b"UIDVALIDITY"])
    assert int(status[b"UIDVALIDITY"]) == inbox
    imap.logout()
    plain = login(server, ALICE)  # imaplib: its COPY returns the tagged response's text
    typ, data = plain.copy("1", "Box")
    assert typ == "OK" and re.search(rb"\[COPYUID %d 1 \d+\]" % box, data[0]), data
    plain.logout()


def test_an_open_session_ends_with_bye_at_its_next_command(
    server: RunningServer, certs: tuple[Party, Party]
) -> None:
    """INBOX selected; MODE ALWAYS set by transcoder-admin: the next FETCH is answered BYE."""
    with xkey(server) as keys:
        keys.provision(certs[0].cert_der)
    reader = connect(server)
    before = int(reader.select_folder("INBOX")[b"UIDVALIDITY"])
    done = admin(server.data, "policy", ALICE, "--mode", "always")
    assert done.returncode == 0, done.stderr
    with pytest.raises(imapclient.exceptions.IMAPClientAbortError, match="UNAVAILABLE"):
        reader.fetch([1], ["BODY.PEEK[]"])
    again = connect(server)
    assert int(again.select_folder("INBOX")[b"UIDVALIDITY"]) > before
    again.logout()


def test_transcoder_client_says_what_a_change_costs(
    server: RunningServer, certs: tuple[Party, Party], workdir: Path
) -> None:
    """transcoder-client notes the full resync after a change of how mail is served, only then."""
    (workdir / "alice.der").write_bytes(certs[0].cert_der)
    connection = ["--plain", "--port", str(server.imap_port)]  # loopback: no TLS needed
    done = transcoder_client(server, "provision", str(workdir / "alice.der"), connection=connection)
    assert (done.returncode, done.stderr) == (0, "")  # MODE OFF: nothing changes
    done = transcoder_client(server, "policy", "--mode", "always", connection=connection)
    assert (done.returncode, done.stderr) == (0, RESYNC_NOTE + "\n")
    done = transcoder_client(server, "policy", "--mode", "always", connection=connection)
    assert (done.returncode, done.stderr) == (0, "")  # the same policy again
    fingerprint = hashlib.sha256(certs[0].cert_der).hexdigest()
    done = transcoder_client(server, "retire", fingerprint, connection=connection)
    assert (done.returncode, done.stderr) == (0, RESYNC_NOTE + "\n")


def test_a_new_view_secret_or_cipher_is_announced(
    server: RunningServer, certs: tuple[Party, Party]
) -> None:
    """A rotated DIR/view-secret or another --smime-cipher, at restart: a new UIDVALIDITY
    for alice (MODE ALWAYS); bob (MODE OFF, his view is the stored message) keeps his."""
    with xkey(server) as keys:
        keys.provision(certs[0].cert_der)
        keys.set_policy(mode="ALWAYS")
    client, bob = CachingClient(), CachingClient(BOB)
    client.sync(server)
    client.sync(server, "Box")
    bob.sync(server)
    server.restart()
    client.same(server)
    server.stop()
    (server.data / "view-secret").write_bytes(os.urandom(32))  # keeps its mode 0600
    server.start()
    client.new(server)
    client.new(server, "Box")
    bob.same(server)
    server.extra_args = ("--smime-cipher", "aes128-gcm")
    server.restart()
    client.new(server)
    bob.same(server)
    server.restart()
    client.same(server)
