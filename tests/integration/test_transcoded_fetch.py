"""The leak and consistency suite of the transcoded view, once for each format.

Issues 4 and 5 ask for the same tests for S/MIME and OpenPGP: every test
here takes the ``reader`` fixture, parametrized over both formats.  One
server holds bob@example.org (S/MIME, RSA-3072) and alice@example.org
(OpenPGP, Curve25519), each under MODE ALWAYS with the same three messages:
a small one, a multipart one with attachments and a 5 MB one, each holding
a unique marker in clear in its stored body.

docs/design.md invariants pinned down: 1 (byte-stable view: two sessions and a
restart), 2 (sizes come from the view) and the leak half of 3 (the marker
never crosses the wire in clear).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import make_party
from tests.integration.conftest import RunningServer
from tests.integration.messages import with_marker
from tests.integration.transcoding import (
    CHUNK,
    FETCH_FORMS,
    OPENPGP,
    SMIME,
    append,
    check_bodystructure,
    check_inner,
    fetch,
    fetch_body,
    fetch_parsed,
    large_message,
    leaf_sizes,
    login,
    openssl_decrypt,
    partial,
    pgp_armored,
    provision,
    raw,
    reassemble,
    running_server,
    with_attachment,
)
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys

pytestmark = pytest.mark.integration

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

#: Unique to this run: it must never appear in what the server sends under ALWAYS.
MARKER = f"LEAK-CANARY-{uuid.uuid4().hex}"
MESSAGES = {
    "small": with_marker(MARKER),
    "attachments": with_attachment(MARKER),
    "5mb": large_message(MARKER),
}
#: Octets per slice when the 5 MB view is reassembled (1000-octet slices are sampled).
LARGE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Reader:
    """An account under MODE ALWAYS, the UIDs of its messages, and how it opens a view."""

    server: RunningServer
    user: str
    format: str
    uids: dict[str, int]
    open_view: Callable[[bytes], bytes]


@pytest.fixture(scope="module", params=["cache", "no-cache"])
def suite_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """bob@example.org and alice@example.org with the three messages, policy not yet set.

    Once with the view cache and once with ``--view-cache-size 0`` (issue 9:
    the cache is an optimisation, every test holds without it).
    """
    accounts = ["bob@example.org", "alice@example.org"]
    extra = ("--view-cache-size", "0") if request.param == "no-cache" else ()
    root = tmp_path_factory.mktemp("leak-suite")
    with running_server(root, accounts, extra) as server:
        for user in accounts:
            imap = login(server, user)
            assert [append(imap, m) for m in MESSAGES.values()] == [1, 2, 3]
            imap.logout()
        yield server


@pytest.fixture(scope="module", params=[SMIME, OPENPGP], ids=str.lower)
def reader(
    request: pytest.FixtureRequest,
    suite_server: RunningServer,
    pgp: PgpTestKeys,
    tmp_path_factory: pytest.TempPathFactory,
) -> Reader:
    """bob with an RSA-3072 certificate (S/MIME) or alice with a Curve25519 key (OpenPGP)."""
    uids = dict(zip(MESSAGES, [1, 2, 3], strict=True))
    if request.param == SMIME:
        workdir = tmp_path_factory.mktemp("bob")
        party = make_party(workdir, "bob", rsa.generate_private_key(65537, 3072))
        provision(suite_server, "bob@example.org", party.cert_der, SMIME)
        return Reader(
            suite_server,
            "bob@example.org",
            SMIME,
            uids,
            lambda view: openssl_decrypt(view, party, workdir),
        )
    provision(suite_server, "alice@example.org", pgp.x25519.material, OPENPGP)
    return Reader(
        suite_server,
        "alice@example.org",
        OPENPGP,
        uids,
        lambda view: pgp.decrypt(pgp_armored(view)).plaintext,
    )


@pytest.mark.parametrize("name", MESSAGES)
def test_view_opens_to_the_stored_message(reader: Reader, name: str) -> None:
    """The fetched view decrypts to the stored message (marker included) under RFC 9788."""
    imap = login(reader.server, reader.user)
    view = fetch_body(imap, reader.uids[name])
    inner = reader.open_view(view)
    assert MARKER.encode() in inner
    check_inner(inner, MESSAGES[name], view)
    imap.logout()


@pytest.mark.parametrize("name", MESSAGES)
def test_no_fetch_form_shows_the_marker(reader: Reader, name: str) -> None:
    """No FETCH form, alone or all in one command, cold or cached, sends the marker."""
    imap = login(reader.server, reader.user)
    # A copy never fetched before (sizes and structure asked first, before any view)
    # and the message whose view earlier tests may have cached.
    for uid in (append(imap, MESSAGES[name]), reader.uids[name]):
        for form in FETCH_FORMS:
            assert MARKER.encode() not in raw(fetch(imap, uid, f"({form})")), form
        assert MARKER.encode() not in raw(fetch(imap, uid, f"({' '.join(FETCH_FORMS)})"))
        assert MARKER.encode() not in raw(fetch(imap, uid, "FULL"))
    imap.logout()
    # Every octet of the session, not only what imaplib handed back.
    assert MARKER.encode() not in imap.received
    assert len(imap.received) > 10 * len(MESSAGES[name])  # the views really were sent


def test_fetch_of_every_message_shows_no_marker(reader: Reader) -> None:
    """FETCH 1:* of every message's content in one command sends no marker either."""
    imap = login(reader.server, reader.user)
    count = int(imap.select("INBOX")[1][0] or b"0")
    typ, data = imap.fetch("1:*", "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT]<0.100> RFC822)")
    assert typ == "OK"
    assert len([d for d in data if isinstance(d, tuple)]) == 3 * count
    imap.logout()
    assert MARKER.encode() not in imap.received


@pytest.mark.parametrize("name", MESSAGES)
def test_sizes_agree(reader: Reader, name: str) -> None:
    """RFC822.SIZE == len(BODY[]) == the 1000-octet partial FETCHes put together."""
    imap = login(reader.server, reader.user)
    uid = reader.uids[name]
    view = fetch_body(imap, uid)
    assert fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"] == len(view)
    if len(view) < 100 * CHUNK:
        assert reassemble(imap, uid, len(view)) == view
    else:
        # 5 MB in 1000-octet slices is 5,000 round trips: check every 97th slice and
        # the last one, then reassemble the whole view from larger slices.
        for offset in [*range(0, len(view), 97 * CHUNK), len(view) - len(view) % CHUNK]:
            assert partial(imap, uid, offset) == view[offset : offset + CHUNK]
        assert reassemble(imap, uid, len(view), LARGE_CHUNK) == view
    assert partial(imap, uid, len(view)) == b""
    imap.logout()


@pytest.mark.parametrize("name", MESSAGES)
def test_structure_describes_the_view(reader: Reader, name: str) -> None:
    """BODYSTRUCTURE and BODY give the types, sizes and sections of the fetched view."""
    imap = login(reader.server, reader.user)
    uid = reader.uids[name]
    view = fetch_body(imap, uid)
    parsed = fetch_parsed(imap, uid, "(BODYSTRUCTURE BODY)")
    check_bodystructure(parsed[b"BODYSTRUCTURE"], view)
    check_bodystructure(parsed[b"BODY"], view)
    header, _, text = view.partition(b"\r\n\r\n")
    assert fetch_body(imap, uid, "HEADER") == header + b"\r\n\r\n"
    assert fetch_body(imap, uid, "TEXT") == text
    leaves = leaf_sizes(view)
    for number, (_, size, _) in enumerate(leaves, start=1):
        section = fetch_body(imap, uid, str(number))
        assert len(section) == size and section in view
    if reader.format == SMIME:
        assert [media for media, _, _ in leaves] == ["application/pkcs7-mime"]
    else:
        assert [m for m, _, _ in leaves] == [
            "application/pgp-encrypted",
            "application/octet-stream",
        ]
    imap.logout()


class Seen(NamedTuple):
    """What one session saw of a message."""

    view: bytes
    size: int
    structure: Any
    middle: bytes


def seen(reader: Reader) -> list[Seen]:
    """Each message's view, RFC822.SIZE, BODYSTRUCTURE and a slice, in a new session."""
    imap = login(reader.server, reader.user)
    found = []
    for uid in reader.uids.values():
        parsed = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        view = fetch_body(imap, uid)
        middle = partial(imap, uid, len(view) // 2)
        found.append(Seen(view, parsed[b"RFC822.SIZE"], parsed[b"BODYSTRUCTURE"], middle))
    imap.logout()
    return found


def test_same_octets_across_sessions_and_a_restart(reader: Reader) -> None:
    """Two sessions and a session after a restart see identical views, sizes and structure."""
    first = seen(reader)
    assert all(s.size == len(s.view) for s in first)
    assert seen(reader) == first
    reader.server.restart()
    assert seen(reader) == first
