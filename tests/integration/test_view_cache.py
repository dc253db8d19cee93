"""The view cache is an optimisation only (issue 9): cache on or off, the same octets.

As a hoster would run them, each ``twistd -n transcoder`` on its own data
directory: ``cached`` with the default cache (it makes ``DIR/view-secret``),
``uncached`` with ``--view-secret`` pointing at that file and
``--view-cache-size 0``, and ``other`` with its own secret and no cache.
The same messages -- a small one, a multipart one and a 5 MB one, whose
view is streamed as it is encrypted -- are APPENDed to each and the same
certificate provisioned.  ``FETCH BODY[]`` and reassembled partial FETCHes
are compared octet for octet and opened with ``openssl cms -decrypt``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import Party, make_party
from tests.integration.conftest import RunningServer
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.transcoding import (
    SMIME,
    append,
    check_inner,
    fetch_body,
    fetch_parsed,
    large_message,
    login,
    openssl_decrypt,
    provision,
    reassemble,
    running_server,
)

pytestmark = pytest.mark.integration

USER = "carol@example.org"
MESSAGES = (SIMPLE, MULTIPART, large_message("CACHE-OFF-MARKER"))
#: Slices of the reassembly: a client fetching a large message piece by piece.
SLICE = 512 * 1024


@pytest.fixture(scope="module")
def carol(tmp_path_factory: pytest.TempPathFactory) -> Party:
    """carol@example.org's RSA-2048 key and certificate."""
    return make_party(
        tmp_path_factory.mktemp("carol"), "carol", rsa.generate_private_key(65537, 2048)
    )


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, carol: Party
) -> Iterator[dict[str, RunningServer]]:
    """``cached`` (its own secret), ``uncached`` (cached's secret, no cache), ``other``."""
    root = tmp_path_factory.mktemp("view-cache")
    with ExitStack() as stack:
        cached = stack.enter_context(running_server(root / "cached", [USER]))
        shared = ("--view-secret", str(cached.data / "view-secret"), "--view-cache-size", "0")
        uncached = stack.enter_context(running_server(root / "uncached", [USER], shared))
        other = stack.enter_context(
            running_server(root / "other", [USER], ("--view-cache-size", "0"))
        )
        found = {"cached": cached, "uncached": uncached, "other": other}
        for server in found.values():
            imap = login(server, USER)
            assert [append(imap, m) for m in MESSAGES] == [1, 2, 3]
            imap.logout()
            provision(server, USER, carol.cert_der, SMIME)
        yield found


def views(server: RunningServer) -> list[bytes]:
    """``BODY.PEEK[]`` of every message, as served."""
    imap = login(server, USER)
    try:
        return [fetch_body(imap, uid) for uid in (1, 2, 3)]
    finally:
        imap.logout()


def view_files(server: RunningServer) -> list[Path]:
    return [p for p in (server.data / "views").rglob("*") if p.is_file()]


def test_cache_on_and_off_serve_the_same_octets_which_openssl_opens(
    servers: dict[str, RunningServer], carol: Party, tmp_path: Path
) -> None:
    """Shared secret: the caching and the non-caching server send identical views, each time."""
    cached = views(servers["cached"])
    assert views(servers["uncached"]) == cached == views(servers["cached"])
    assert views(servers["uncached"]) == cached  # recomputed again, identically
    assert view_files(servers["uncached"]) == []
    for stored, view in zip(MESSAGES, cached, strict=True):
        check_inner(openssl_decrypt(view, carol, tmp_path), stored, view)


def test_another_secret_gives_other_octets(servers: dict[str, RunningServer]) -> None:
    """A server with a secret of its own sends other octets, of the same sizes."""
    ours, theirs = views(servers["cached"]), views(servers["other"])
    for mine, other in zip(ours, theirs, strict=True):
        assert mine != other and len(mine) == len(other)


def test_partial_fetches_reassemble_to_the_streamed_view(
    servers: dict[str, RunningServer],
) -> None:
    """Cold partial FETCHes of the 5 MB view (cache on and off) join to BODY[]; sizes agree."""
    expected = views(servers["cached"])[2]
    for name in ("uncached", "cached"):
        server = servers[name]
        imap = login(server, USER)
        uid = append(imap, MESSAGES[2])  # never fetched: every slice is cold (or being cached)
        size = fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"]
        assert size == len(expected)
        assert reassemble(imap, uid, size, SLICE) == expected, name
        assert fetch_body(imap, uid) == expected
        imap.logout()


def test_restart_and_lost_cache_entries_change_nothing(servers: dict[str, RunningServer]) -> None:
    """After a restart, with and without the cache directory, every view is the same octets."""
    before = views(servers["cached"])
    for name in ("cached", "uncached"):
        server = servers[name]
        server.stop()
        if name == "cached":
            shutil.rmtree(server.data / "views")
        server.start()
        assert views(server) == before, name
