"""Mail that only looks encrypted is not served in clear under MODE ALWAYS (issue 8, finding 2).

The attack: the "already encrypted, don't encrypt twice" shortcut read
labels only, so plaintext after an armored block, inside a
``multipart/encrypted`` or under an ``application/pkcs7-mime`` label
crossed the network in clear in every FETCH form.  Here each crafted shape
(tests/mime/ciphertext_samples.py) is stored for an S/MIME reader and an
OpenPGP reader of a real server under MODE ALWAYS and fetched in every
content form; the marker (and, for base64 shapes, the stored base64 lines)
never appears in anything the server sent, and the message served opens
with the real decryptor (``openssl cms -decrypt``, ``gpg --decrypt``) to
the stored message under header protection.  Genuine ciphertext made by
openssl and gpg -- and the server's own views -- still pass through as
stored, their RFC822.SIZE that of what is served.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import Party, make_party
from tests.integration.conftest import RunningServer
from tests.integration.transcoding import (
    FETCH_FORMS,
    OPENPGP,
    SMIME,
    append,
    check_inner,
    fetch,
    fetch_body,
    fetch_parsed,
    login,
    openssl_decrypt,
    pgp_armored,
    provision,
    running_server,
)
from tests.mime.ciphertext_samples import (
    Genuine,
    gpg_armored,
    inline_pgp,
    look_alikes,
    pgp_mime,
    smime_enveloped,
    smime_signed,
)
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys

pytestmark = pytest.mark.integration

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

BOB, ALICE = "bob@example.org", "alice@example.org"
#: Unique to this run: it must never appear in what the server sends.
MARKER = f"LOOKALIKE-CANARY-{uuid.uuid4().hex}".encode()
SECRET = b"Content-Type: text/plain\r\n\r\nsealed by a real tool\r\n"
#: FETCH_FORMS plus the non-PEEK section forms that also set \Seen.
FORMS = (*FETCH_FORMS, "BODY[1]", "BODY[TEXT]")


@dataclass(frozen=True)
class Reader:
    """An account under MODE ALWAYS and how its client opens what the server sends."""

    server: RunningServer
    user: str
    open_view: Callable[[bytes], bytes]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("plaintext-leak")


@pytest.fixture(scope="module")
def bob(workdir: Path) -> Party:
    """bob@example.org's RSA key and certificate (the S/MIME reader)."""
    return make_party(workdir, "bob", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def leak_server(workdir: Path, bob: Party, pgp: PgpTestKeys) -> Iterator[RunningServer]:
    """bob (S/MIME) and alice (OpenPGP, Curve25519), both provisioned, MODE ALWAYS."""
    with running_server(workdir / "server", [BOB, ALICE]) as server:
        provision(server, BOB, bob.cert_der, SMIME)
        provision(server, ALICE, pgp.x25519.material, OPENPGP)
        yield server


@pytest.fixture(scope="module", params=[SMIME, OPENPGP], ids=str.lower)
def reader(
    request: pytest.FixtureRequest,
    leak_server: RunningServer,
    bob: Party,
    pgp: PgpTestKeys,
    workdir: Path,
) -> Reader:
    """bob, whose views openssl opens, or alice, whose views gpg opens."""
    if request.param == SMIME:
        return Reader(leak_server, BOB, lambda view: openssl_decrypt(view, bob, workdir))
    return Reader(leak_server, ALICE, lambda view: pgp.decrypt(pgp_armored(view)).plaintext)


@pytest.fixture(scope="module")
def genuine(workdir: Path, pgp: PgpTestKeys) -> Genuine:
    """Real ciphertext to wrap plaintext around: to and by dave, and to alice."""
    dave = make_party(workdir, "dave", rsa.generate_private_key(65537, 2048))
    text = b"Content-Type: text/plain\r\n\r\nsigned: " + MARKER + b"\r\n"
    return Genuine(
        smime_enveloped(workdir, dave, SECRET),
        smime_signed(workdir, dave, text),
        gpg_armored(pgp, SECRET),
    )


@pytest.mark.parametrize("shape", sorted(look_alikes(Genuine(b"", b"", b""), b"")))
def test_look_alike_is_encrypted_in_every_fetch_form(
    reader: Reader, genuine: Genuine, shape: str
) -> None:
    """A crafted encrypted-looking message never crosses in clear; the view opens to it."""
    crafted = look_alikes(genuine, MARKER)[shape]
    imap = login(reader.server, reader.user)
    try:
        uid = append(imap, crafted.message)
        for form in FORMS:
            fetch(imap, uid, f"({form})")
        view = fetch_body(imap, uid)
        assert fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"] == len(view)
        for probe in crafted.probes:
            assert probe not in imap.received, (shape, probe)
        check_inner(reader.open_view(view), crafted.message, view)
    finally:
        imap.logout()


def genuine_for(reader: Reader, workdir: Path, bob: Party, pgp: PgpTestKeys) -> list[bytes]:
    """Messages encrypted to ``reader`` by openssl (CBC, BER streaming, GCM) or gpg."""
    if reader.user == BOB:
        return [
            smime_enveloped(workdir, bob, SECRET, *options)
            for options in ((), ("-stream",), ("-aes-256-gcm",))
        ]
    armored = gpg_armored(pgp, SECRET)
    return [pgp_mime(armored), inline_pgp(armored)]


def test_genuine_ciphertext_passes_through_unchanged(
    reader: Reader, workdir: Path, bob: Party, pgp: PgpTestKeys
) -> None:
    """openssl's and gpg's messages are served as stored, sizes included, and still open."""
    imap = login(reader.server, reader.user)
    try:
        for stored in genuine_for(reader, workdir, bob, pgp):
            uid = append(imap, stored)
            size = fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"]
            served = fetch_body(imap, uid)
            assert (served, size) == (stored, len(stored))
            if reader.user == BOB:
                assert openssl_decrypt(served, bob, workdir) == SECRET
            else:
                armored = served.partition(b"-----BEGIN")[2].partition(b"-----END")[0]
                opened = pgp.decrypt(b"-----BEGIN" + armored + b"-----END PGP MESSAGE-----")
                assert opened.plaintext == SECRET
    finally:
        imap.logout()


def test_the_servers_own_view_passes_through_unchanged(reader: Reader) -> None:
    """A view the server made, stored again, is ciphertext: served as it is, not re-encrypted."""
    imap = login(reader.server, reader.user)
    try:
        plain = b"Subject: own view\r\nContent-Type: text/plain\r\n\r\n" + MARKER + b"\r\n"
        view = fetch_body(imap, append(imap, plain))
        uid = append(imap, view)
        assert fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"] == len(view)
        assert fetch_body(imap, uid) == view
        assert MARKER not in imap.received
    finally:
        imap.logout()
