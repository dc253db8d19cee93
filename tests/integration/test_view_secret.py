"""Several servers, one view secret (issue 9, "Done when"): the same message is the same octets.

As a hoster would run them: each ``twistd -n transcoder`` on its own data
directory, the first making ``DIR/view-secret``, the second pointed at it
with ``--view-secret``, a third with a secret of its own.  The same
messages are APPENDed to each and the same certificates provisioned with
XKEY; ``FETCH BODY[]`` is compared octet for octet and opened with
``openssl cms -decrypt``.  A restart with the view cache deleted serves the
same octets again: nothing but the secret makes a view what it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.cms.parties import Party, generate_parties
from tests.integration.conftest import RunningServer, free_port
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.transcoding import (
    SMIME,
    append,
    check_inner,
    fetch_body,
    login,
    openssl_decrypt,
    provision,
    running_server,
)

pytestmark = pytest.mark.integration

KINDS = ("rsa3072", "p256")
MESSAGES = (SIMPLE, MULTIPART)


def account(kind: str) -> str:
    """The account whose certificate is ``kind``'s (``<kind>@example.org``)."""
    return f"{kind}@example.org"


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    """Keys and certificates, one set for every server."""
    return generate_parties(tmp_path_factory.mktemp("parties"))


def populate(server: RunningServer, parties: dict[str, Party]) -> None:
    """MESSAGES into every account's INBOX, then its certificate and MODE ALWAYS."""
    for kind in KINDS:
        imap = login(server, account(kind))
        assert [append(imap, m) for m in MESSAGES] == [1, 2]
        imap.logout()
        provision(server, account(kind), parties[kind].cert_der, SMIME)


def views(server: RunningServer) -> dict[tuple[str, int], bytes]:
    """``BODY[]`` of every message of every account, as served."""
    found = {}
    for kind in KINDS:
        imap = login(server, account(kind))
        for uid in (1, 2):
            found[kind, uid] = fetch_body(imap, uid)
        imap.logout()
    return found


@pytest.fixture(scope="module")
def three_servers(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> Iterator[dict[str, RunningServer]]:
    """``first`` (makes its secret), ``second`` (``--view-secret`` of first's), ``other``.

    ``second`` runs the README's ``twistd -n transcoder --data DIR2 --view-secret
    DIR1/view-secret`` (as the ``transcoder`` twistd plugin, on test ports).
    """
    root = tmp_path_factory.mktemp("view-secret")
    accounts = [account(kind) for kind in KINDS]
    with ExitStack() as stack:
        first = stack.enter_context(running_server(root / "first", accounts))
        shared = ("--view-secret", str(first.data / "view-secret"))
        second = stack.enter_context(running_server(root / "second", accounts, shared))
        other = stack.enter_context(running_server(root / "other", accounts))
        servers = {"first": first, "second": second, "other": other}
        for server in servers.values():
            populate(server, parties)
        yield servers


def test_two_servers_sharing_the_secret_serve_identical_octets(
    three_servers: dict[str, RunningServer], parties: dict[str, Party], tmp_path: Path
) -> None:
    """Same secret, same message, same certificate: BODY[] is the same octets; openssl opens it."""
    first, second = views(three_servers["first"]), views(three_servers["second"])
    assert first == second
    assert not (three_servers["second"].data / "view-secret").exists()
    for (kind, uid), view in first.items():
        inner = openssl_decrypt(view, parties[kind], tmp_path)
        check_inner(inner, MESSAGES[uid - 1], view)


def test_a_server_with_another_secret_serves_other_octets_of_the_same_size(
    three_servers: dict[str, RunningServer],
) -> None:
    """Another secret: every view differs, and is exactly as long."""
    first, other = views(three_servers["first"]), views(three_servers["other"])
    for key, view in first.items():
        assert other[key] != view and len(other[key]) == len(view), key


def test_a_restart_without_the_view_cache_serves_the_same_octets(
    three_servers: dict[str, RunningServer],
) -> None:
    """Stop, delete DIR/views, start again: every view is recomputed to the same octets."""
    server = three_servers["second"]
    before = views(server)
    server.stop()
    shutil.rmtree(server.data / "views")
    server.start()
    assert views(server) == before == views(three_servers["first"])


def test_a_missing_view_secret_file_stops_the_start(tmp_path: Path) -> None:
    """--view-secret naming no file: the server refuses to start, and makes no secret."""
    data = tmp_path / "data"
    missing = tmp_path / "no-such-secret"
    server = RunningServer(data, free_port(), free_port(), ("--view-secret", str(missing)))
    with pytest.raises(RuntimeError, match="view secret"):
        server.start()
    assert not missing.exists() and not (data / "view-secret").exists()
