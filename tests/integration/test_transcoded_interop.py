"""Transcoded FETCH opened by real peers (issues 4 and 5: "Tests" and "Done when").

As a new user would: provision a certificate or an OpenPGP key with XKEY, set
MODE ALWAYS, fetch with imaplib; then ``openssl cms -decrypt`` (every cipher
and recipient kind), ``gpgsm --decrypt`` (RSA, CBC), cryptography's
``pkcs7_decrypt_smime`` (RSA PKCS#1 v1.5, CBC) and ``gpg --decrypt``
(RSA-3072 and Curve25519) open every message, and what they recover is the
stored message under RFC 9788 header protection.

One data directory holds an account per S/MIME key kind; a server is started
on it once per cipher/padding setting (``scope="module"`` parameters share
it between the tests of a setting).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.cms.parties import Party, generate_parties
from tests.cms.peers import GpgsmHome
from tests.integration.conftest import RunningServer, free_port
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.transcoding import (
    OPENPGP,
    SMIME,
    append,
    check_bodystructure,
    check_inner,
    check_outer_header,
    fetch_body,
    fetch_parsed,
    login,
    openssl_decrypt,
    pgp_armored,
    provision,
    running_server,
    smime_der,
    smime_parts,
)
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys, subkeys

pytestmark = pytest.mark.integration

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

#: The stored messages, UIDs 1 and 2 of every account.
MESSAGES = {1: SIMPLE, 2: MULTIPART}
KINDS = ("rsa3072", "rsa2048", "p256", "p384", "p521")


class Cms(NamedTuple):
    """A server's S/MIME settings: ``--smime-cipher`` and ``--smime-rsa-padding``."""

    cipher: str
    padding: str

    def __str__(self) -> str:
        return f"{self.cipher}-{self.padding}"


SETTINGS = [
    Cms("aes256-cbc", "pkcs1v15"),
    Cms("aes256-cbc", "oaep"),
    Cms("aes128-cbc", "pkcs1v15"),
    Cms("aes256-gcm", "pkcs1v15"),
    Cms("aes256-gcm", "oaep"),
    Cms("aes128-gcm", "oaep"),
]
#: What gpgsm 2.2 and cryptography's PKCS#7 decryption support: RSA v1.5 with AES-CBC.
V15_CBC = [s for s in SETTINGS if s.padding == "pkcs1v15" and s.cipher.endswith("cbc")]


def account(kind: str) -> str:
    """The account of a key kind (its certificate names ``<kind>@example.org``)."""
    return f"{kind}@example.org"


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    """RSA-3072, RSA-2048, P-256, P-384 and P-521 keys with their certificates."""
    return generate_parties(tmp_path_factory.mktemp("parties"))


@pytest.fixture(scope="module")
def smime_data(tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]) -> Path:
    """A data directory: one account per key kind with its certificate, two messages, ALWAYS."""
    root = tmp_path_factory.mktemp("smime-matrix")
    with running_server(root, [account(kind) for kind in KINDS]) as server:
        for kind in KINDS:
            imap = login(server, account(kind))
            assert [append(imap, m) for m in MESSAGES.values()] == list(MESSAGES)
            imap.logout()
            provision(server, account(kind), parties[kind].cert_der, SMIME)
        return server.data


@pytest.fixture(scope="module")
def smime_server(smime_data: Path, cms: Cms) -> Iterator[RunningServer]:
    """The server on the shared data directory with ``cms``'s settings."""
    args = ("--smime-cipher", cms.cipher, "--smime-rsa-padding", cms.padding)
    server = RunningServer(smime_data, free_port(), free_port(), args)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gpgsm_home(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> Iterator[GpgsmHome]:
    """A GNUPGHOME holding the RSA-3072 key (imported from PKCS#12) for ``gpgsm --decrypt``."""
    home = GpgsmHome(tmp_path_factory.mktemp("gpgsm") / "home", parties["rsa3072"])
    yield home
    home.close()


@pytest.mark.parametrize("cms", SETTINGS, ids=str, scope="module")
@pytest.mark.parametrize("kind", KINDS)
def test_openssl_opens_every_view(
    smime_server: RunningServer, parties: dict[str, Party], cms: Cms, kind: str, tmp_path: Path
) -> None:
    """openssl cms -decrypt opens each view; sizes known before BODY[] match it."""
    imap = login(smime_server, account(kind))
    for uid, stored in MESSAGES.items():
        before = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        view = fetch_body(imap, uid)
        after = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        assert before == after and after[b"RFC822.SIZE"] == len(view)
        check_bodystructure(after[b"BODYSTRUCTURE"], view)
        smime_parts(view, authenticated=cms.cipher.endswith("gcm"))
        check_outer_header(view, stored)
        check_inner(openssl_decrypt(view, parties[kind], tmp_path), stored, view)
    imap.logout()


@pytest.mark.parametrize("cms", V15_CBC, ids=str, scope="module")
def test_gpgsm_opens_rsa_cbc_views(smime_server: RunningServer, gpgsm_home: GpgsmHome) -> None:
    """gpgsm --decrypt (GnuPG's S/MIME tool) opens the RSA + AES-CBC views."""
    imap = login(smime_server, account("rsa3072"))
    for uid, stored in MESSAGES.items():
        view = fetch_body(imap, uid)
        check_inner(gpgsm_home.decrypt(smime_der(view)), stored, view)
    imap.logout()


@pytest.mark.parametrize("cms", V15_CBC, ids=str, scope="module")
def test_cryptography_opens_rsa_v15_cbc_views(
    smime_server: RunningServer, parties: dict[str, Party]
) -> None:
    """cryptography's pkcs7_decrypt_smime opens the whole fetched message (RSA v1.5, CBC)."""
    party = parties["rsa3072"]
    imap = login(smime_server, account("rsa3072"))
    for uid, stored in MESSAGES.items():
        view = fetch_body(imap, uid)
        inner = pkcs7.pkcs7_decrypt_smime(view, party.cert, party.key, [])
        check_inner(inner, stored, view)
    imap.logout()


# -- OpenPGP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pgp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with alice@example.org (whose OpenPGP keys the ``pgp`` fixture holds)."""
    with running_server(tmp_path_factory.mktemp("pgp-interop"), ["alice@example.org"]) as server:
        imap = login(server, "alice@example.org")
        assert [append(imap, m) for m in MESSAGES.values()] == list(MESSAGES)
        imap.logout()
        yield server


@pytest.mark.parametrize("key_name", ["rsa", "x25519"], ids=["rsa3072", "cv25519"])
def test_gpg_opens_every_view(pgp_server: RunningServer, pgp: PgpTestKeys, key_name: str) -> None:
    """gpg --decrypt opens each RFC 3156 view, encrypted to the key provisioned last."""
    key = getattr(pgp, key_name)
    provision(pgp_server, "alice@example.org", key.material, OPENPGP)
    imap = login(pgp_server, "alice@example.org")
    for uid, stored in MESSAGES.items():
        view = fetch_body(imap, uid)
        parsed = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        assert parsed[b"RFC822.SIZE"] == len(view)
        check_bodystructure(parsed[b"BODYSTRUCTURE"], view)
        check_outer_header(view, stored)
        decrypted = pgp.decrypt(pgp_armored(view))
        # RFC 4880 5.1: the session key went to this key's encryption subkey only.
        assert [s.split()[2] for s in decrypted.statuses if s.split()[1] == "ENC_TO"] == [
            subkeys(key)[0][-16:].upper()
        ]
        check_inner(decrypted.plaintext, stored, view)
    imap.logout()
