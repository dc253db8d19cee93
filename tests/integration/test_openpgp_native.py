"""OpenPGP as a new user would try it (issue 12, "Done when"), on real servers.

A Curve25519 key and an RSA key, each made by gpg for its own account, are
provisioned with XKEY; FORMAT OPENPGP, MODE ALWAYS; a mailbox is fetched
with imaplib and every message opens with ``gpg --decrypt`` and with
``sq decrypt``.  Two servers sharing the view secret serve the same octets,
and so does a restart with the view cache deleted: PGP/MIME views are now
derived, not stored.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import RunningServer
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.transcoding import (
    OPENPGP,
    append,
    check_bodystructure,
    check_inner,
    fetch_body,
    fetch_parsed,
    login,
    pgp_armored,
    provision,
    running_server,
    with_attachment,
)
from tests.openpgp.gpgkeys import gpg, kill_agents

pytestmark = pytest.mark.integration

#: Account -> (primary key algorithm, encryption subkey algorithm), as gpg names them.
KEYS = {"cv@example.org": ("ed25519", "cv25519"), "rsa@example.org": ("rsa3072", "rsa3072")}
MESSAGES = (SIMPLE, MULTIPART, with_attachment("MARKER-12"))


@dataclass(frozen=True)
class UserKey:
    """A user's public key (what XKEY PUT sends) and their secret key, for the peers."""

    public: bytes
    secret_file: Path
    home: Path


@pytest.fixture(scope="module")
def user_keys() -> Iterator[dict[str, UserKey]]:
    """One key per account, made with ``gpg --quick-gen-key`` and ``--quick-add-key``."""
    if shutil.which("sq") is None or shutil.which("gpg") is None:
        pytest.skip("gpg and sq are needed")
    root = Path(tempfile.mkdtemp(prefix="test-native-users-"))
    keys = {}
    try:
        for address, (primary, subkey) in KEYS.items():
            home = root / address
            home.mkdir(mode=0o700)
            gpg(home, "--quick-gen-key", f"<{address}>", primary, "cert,sign", "never")
            listing = gpg(home, "--with-colons", "--list-keys").decode().splitlines()
            fpr = next(line.split(":")[9] for line in listing if line.startswith("fpr"))
            gpg(home, "--quick-add-key", fpr, subkey, "encr", "never")
            secret_file = root / f"{address}.pgp"
            secret_file.write_bytes(gpg(home, "--export-secret-keys", fpr))
            keys[address] = UserKey(gpg(home, "--armor", "--export", fpr), secret_file, home)
        yield keys
    finally:
        for address in KEYS:
            kill_agents(root / address)
        shutil.rmtree(root, ignore_errors=True)


def views(server: RunningServer) -> dict[tuple[str, int], bytes]:
    """``BODY[]`` of every message of every account, as served (sizes and structure checked)."""
    found = {}
    for address in KEYS:
        imap = login(server, address)
        for uid in range(1, len(MESSAGES) + 1):
            described = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
            view = fetch_body(imap, uid)
            assert described[b"RFC822.SIZE"] == len(view)
            check_bodystructure(described[b"BODYSTRUCTURE"], view)
            found[address, uid] = view
        imap.logout()
    return found


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory, user_keys: dict[str, UserKey]
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two servers sharing one view secret, each with both accounts provisioned."""
    root = tmp_path_factory.mktemp("openpgp-native")
    with ExitStack() as stack:
        first = stack.enter_context(running_server(root / "first", list(KEYS)))
        shared = ("--view-secret", str(first.data / "view-secret"))
        second = stack.enter_context(running_server(root / "second", list(KEYS), shared))
        for server in (first, second):
            for address, key in user_keys.items():
                imap = login(server, address)
                assert [append(imap, m) for m in MESSAGES] == [1, 2, 3]
                imap.logout()
                provision(server, address, key.public, OPENPGP)
        yield first, second


def test_gpg_and_sq_open_every_message(
    two_servers: tuple[RunningServer, RunningServer], user_keys: dict[str, UserKey]
) -> None:
    for (address, uid), view in views(two_servers[0]).items():
        armored = pgp_armored(view)
        assert b"MARKER-12" not in view
        key = user_keys[address]
        by_sq = subprocess.run(
            ["sq", "decrypt", "--recipient-key", str(key.secret_file)],
            input=armored,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert by_sq.returncode == 0, by_sq.stderr
        check_inner(by_sq.stdout, MESSAGES[uid - 1], view)
        check_inner(gpg(key.home, "--decrypt", stdin=armored), MESSAGES[uid - 1], view)


def test_servers_sharing_the_secret_serve_identical_octets(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    first, second = two_servers
    assert views(first) == views(second)


def test_restart_without_the_view_cache_serves_the_same_octets(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    server = two_servers[1]
    before = views(server)
    server.stop()
    shutil.rmtree(server.data / "views")
    server.start()
    assert views(server) == before
