"""Signed OpenPGP views on the real server (issue 16), fetched with imaplib.

A user with a Curve25519 key sets ``XKEY POLICY SIGN ON``; every view is
PGP/MIME whose encrypted part is a signed message (RFC 3156 section 6.2).
The server's public key is taken from ``XKEY SERVER`` (``transcoder-client
server-keys``), as a user would, and then:

* ``gpg --decrypt`` reports GOODSIG and VALIDSIG by the published signing
  subkey of the published primary key, and gives the inner entity;
* ``sq decrypt --signer-cert <published key>`` verifies;
* a flipped octet of the view yields no good signature (no plaintext), and a
  flipped octet of the signed message inside is a BADSIG;
* the octets are the same in two sessions and after a restart with the view
  cache deleted; RFC822.SIZE and BODYSTRUCTURE describe them exactly;
* ``SIGN OFF`` gives unsigned views again;
* after ``transcoder-admin server-key rotate openpgp`` views are signed by the
  new key's signing subkey;
* with ``--openpgp-encoder gpg`` the gpg path's signed views verify too.
"""

from __future__ import annotations

import imaplib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import RunningServer, admin
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.test_client import client
from tests.integration.transcoding import (
    OPENPGP,
    append,
    check_bodystructure,
    check_inner,
    fetch_body,
    fetch_parsed,
    large_message,
    login,
    pgp_armored,
    provision,
    running_server,
    with_attachment,
)
from tests.openpgp.gpgkeys import gpg, kill_agents

pytestmark = pytest.mark.integration

USER = "signed@example.org"
MESSAGES = (SIMPLE, MULTIPART, with_attachment("MARKER-16"))


@dataclass(frozen=True)
class Verifier:
    """The user's side: a gpg home with their secret key and the server's published key."""

    home: Path
    secret_file: Path
    public: bytes
    server_cert: Path
    server_fingerprint: str
    signing_subkey: str

    def gpg(self, armored: bytes, *extra: str) -> tuple[int, bytes, str]:
        """``gpg --status-fd 2 [extra] --decrypt``: exit status, output, status lines."""
        done = subprocess.run(
            [
                *("gpg", "--homedir", str(self.home), "--batch", "--no-tty"),
                *("--trust-model", "always", "--status-fd", "2", *extra, "--decrypt"),
            ],
            input=armored,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr.decode(errors="replace")

    def sq(self, armored: bytes) -> subprocess.CompletedProcess[bytes]:
        """``sq decrypt`` with the user's key, requiring a signature by the server's key."""
        return subprocess.run(
            [
                *("sq", "decrypt", "--recipient-key", str(self.secret_file)),
                *("--signer-cert", str(self.server_cert)),
            ],
            input=armored,
            capture_output=True,
            timeout=60,
            check=False,
        )


def statuses(lines: str, keyword: str) -> list[list[str]]:
    """Arguments of each ``[GNUPG:] keyword`` line."""
    prefix = f"[GNUPG:] {keyword} "
    return [ln[len(prefix) :].split() for ln in lines.splitlines() if ln.startswith(prefix)]


@pytest.fixture(scope="module")
def user_home() -> Iterator[tuple[Path, Path, bytes]]:
    """The user's gpg home, secret key file and armored public key (Curve25519 subkey)."""
    if shutil.which("sq") is None or shutil.which("gpg") is None:
        pytest.skip("gpg and sq are needed")
    root = Path(tempfile.mkdtemp(prefix="tc-signed-user-"))
    home = root / "home"
    home.mkdir(mode=0o700)
    try:
        gpg(home, "--quick-gen-key", f"<{USER}>", "ed25519", "cert,sign", "never")
        listing = gpg(home, "--with-colons", "--list-keys").decode().splitlines()
        fpr = next(line.split(":")[9] for line in listing if line.startswith("fpr"))
        gpg(home, "--quick-add-key", fpr, "cv25519", "encr", "never")
        secret_file = root / "user.pgp"
        secret_file.write_bytes(gpg(home, "--export-secret-keys", fpr))
        yield home, secret_file, gpg(home, "--armor", "--export", fpr)
    finally:
        kill_agents(home)
        shutil.rmtree(root, ignore_errors=True)


def sign_policy(server: RunningServer, value: str) -> None:
    """``XKEY POLICY SIGN value`` for the user, answered OK."""
    imap = login(server, USER, None)
    try:
        typ, data = imap.xatom("XKEY", "POLICY", "SIGN", value)
        assert typ == "OK", data
    finally:
        imap.logout()


def published_key(
    server: RunningServer, user_home: tuple[Path, Path, bytes], folder: Path
) -> Verifier:
    """The server's OpenPGP key as XKEY SERVER publishes it, imported next to the user's key."""
    done = client(server, "server-keys", "--dir", str(folder), "--json", user=USER)
    assert done.returncode == 0, done.stderr
    (entry,) = [k for k in json.loads(done.stdout) if k["format"] == "OPENPGP"]
    home, secret_file, public = user_home
    cert = Path(str(entry["file"]))
    gpg(home, "--import", str(cert))
    return Verifier(home, secret_file, public, cert, entry["fingerprint"], entry["subkeys"][1])


@dataclass
class SignedServer:
    """A running server with the user's mail, and the user's verifier."""

    server: RunningServer
    verifier: Verifier


def start(root: Path, user_home: tuple[Path, Path, bytes], *extra: str) -> Iterator[SignedServer]:
    with running_server(root, [USER], extra) as server:
        imap = login(server, USER)
        assert [append(imap, m) for m in MESSAGES] == [1, 2, 3]
        imap.logout()
        provision(server, USER, user_home[2], OPENPGP)
        sign_policy(server, "ON")
        yield SignedServer(server, published_key(server, user_home, root / "server-keys"))


@pytest.fixture(scope="module")
def signed(
    tmp_path_factory: pytest.TempPathFactory, user_home: tuple[Path, Path, bytes]
) -> Iterator[SignedServer]:
    """The native encoder's server with SIGN ON."""
    yield from start(tmp_path_factory.mktemp("signed-native"), user_home)


def views(server: RunningServer) -> dict[int, bytes]:
    """``BODY[]`` of every message, its RFC822.SIZE and BODYSTRUCTURE checked against it."""
    imap = login(server, USER)
    found = {}
    for uid in range(1, len(MESSAGES) + 1):
        described = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        view = fetch_body(imap, uid)
        assert described[b"RFC822.SIZE"] == len(view)
        check_bodystructure(described[b"BODYSTRUCTURE"], view)
        found[uid] = view
    imap.logout()
    return found


def check_signed(verifier: Verifier, views_by_uid: dict[int, bytes]) -> None:
    """gpg: GOODSIG and VALIDSIG by the published signing subkey; sq verifies; inner entity."""
    for uid, view in views_by_uid.items():
        assert b"MARKER-16" not in view
        armored = pgp_armored(view)
        code, plain, status = verifier.gpg(armored)
        assert code == 0, status
        assert len(statuses(status, "GOODSIG")) == 1, status
        (validsig,) = statuses(status, "VALIDSIG")
        assert validsig[0].lower() == verifier.signing_subkey
        assert validsig[-1].lower() == verifier.server_fingerprint
        check_inner(plain, MESSAGES[uid - 1], view)
        by_sq = verifier.sq(armored)
        assert by_sq.returncode == 0, by_sq.stderr
        check_inner(by_sq.stdout, MESSAGES[uid - 1], view)


def test_gpg_and_sq_verify_the_server_signature(signed: SignedServer) -> None:
    """Every view verifies with gpg and sq against the key XKEY SERVER published."""
    check_signed(signed.verifier, views(signed.server))


def test_a_flipped_octet_fails(signed: SignedServer) -> None:
    """An altered view gives no plaintext and no good signature; the signed message inside,
    altered in its literal data, is a BADSIG."""
    armored = pgp_armored(views(signed.server)[1])
    lines = armored.split(b"\n")
    middle = len(lines) // 2
    lines[middle] = (b"A" if lines[middle][:1] != b"A" else b"B") + lines[middle][1:]
    code, _, status = signed.verifier.gpg(b"\n".join(lines))
    assert code != 0 and not statuses(status, "GOODSIG")
    code, inner, status = signed.verifier.gpg(armored, "--unwrap")
    assert code == 0, status
    at = inner.index(b"Subject")
    tampered = inner[:at] + b"s" + inner[at + 1 :]
    code, _, status = signed.verifier.gpg(tampered)
    assert code != 0 and statuses(status, "BADSIG") and not statuses(status, "GOODSIG")


def test_byte_stable_across_sessions_and_a_restart(signed: SignedServer) -> None:
    """Two sessions serve the same octets; so does a restart with the view cache deleted."""
    before = views(signed.server)
    assert views(signed.server) == before
    signed.server.stop()
    shutil.rmtree(signed.server.data / "views", ignore_errors=True)
    signed.server.start()
    assert views(signed.server) == before


def test_sign_off_serves_unsigned_views(signed: SignedServer) -> None:
    """SIGN OFF: the views decrypt with no signature at all; SIGN ON again: signed again."""
    with_signature = views(signed.server)
    sign_policy(signed.server, "OFF")
    try:
        unsigned = views(signed.server)
        for uid, view in unsigned.items():
            assert view != with_signature[uid]
            code, plain, status = signed.verifier.gpg(pgp_armored(view))
            assert code == 0, status
            assert not statuses(status, "NEWSIG") and not statuses(status, "GOODSIG")
            check_inner(plain, MESSAGES[uid - 1], view)
    finally:
        sign_policy(signed.server, "ON")
    assert views(signed.server) == with_signature


def test_gpg_encoder_signs_too(tmp_path: Path, user_home: tuple[Path, Path, bytes]) -> None:
    """--openpgp-encoder gpg: the gpg path's signed views verify with gpg and sq, and are the
    same octets when fetched again (stored once made)."""
    for running in start(tmp_path, user_home, "--openpgp-encoder", "gpg"):
        first = views(running.server)
        check_signed(running.verifier, first)
        assert views(running.server) == first


def test_after_rotation_views_are_signed_by_the_new_key(
    tmp_path: Path, user_home: tuple[Path, Path, bytes]
) -> None:
    """transcoder-admin server-key rotate openpgp: XKEY SERVER publishes a new key, and the
    next views verify as signed by its signing subkey -- never by the retired one."""
    for running in start(tmp_path, user_home):
        old = running.verifier
        rotated = admin(running.server.data, "server-key", "rotate", "openpgp")
        assert rotated.returncode == 0, rotated.stderr
        new = published_key(running.server, user_home, tmp_path / "rotated")
        assert new.server_fingerprint != old.server_fingerprint
        assert new.signing_subkey != old.signing_subkey
        try:  # the first session to see the new key is told to resynchronise
            served = views(running.server)
        except imaplib.IMAP4.abort as e:
            assert "UIDVALIDITY" in str(e)
            served = views(running.server)
        check_signed(new, served)


def test_large_view_streamed_on_first_fetch_verifies(signed: SignedServer) -> None:
    """A 5 MB message in its own mailbox: RFC822.SIZE first (predicted, nothing encrypted),
    then BODY[] -- streamed as it is encrypted, the signature last -- of exactly that size;
    gpg and sq verify it."""
    imap = login(signed.server, USER, None)
    try:
        assert imap.create("Large")[0] == "OK"
        typ, _ = imap.select("Large")
        assert typ == "OK"
        message = large_message("MARKER-LARGE")
        uid = append(imap, message, "Large")
        size = fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"]
        view = fetch_body(imap, uid)
    finally:
        imap.logout()
    assert len(view) == size
    assert b"MARKER-LARGE" not in view
    armored = pgp_armored(view)
    code, plain, status = signed.verifier.gpg(armored)
    assert code == 0, status
    assert statuses(status, "GOODSIG"), status
    check_inner(plain, message, view)
    assert signed.verifier.sq(armored).returncode == 0
