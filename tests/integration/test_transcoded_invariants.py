"""docs/design.md's invariants of the transcoded view, end to end on the real server.

* Policy OFF serves the stored octets; switching ALWAYS/OFF switches the view.
* Sizes come from the view (2): RFC822.SIZE and BODYSTRUCTURE fetched before
  any BODY[] (predicted, not encrypted) equal those of the materialized view.
* Only FETCH sees the view (4): APPEND, SEARCH BODY/TEXT, STORE, COPY and MOVE
  work on the stored message under ALWAYS.
* Already-encrypted messages are served exactly as stored.
* ``--obscure-subject``: ``[...]`` outside, the real Subject inside.
* Fail closed (3): a retired key is ``NO [XKEY-NOKEY]``, a failing or killed
  gpg is ``NO [TRANSCODE-FAILED]``; no plaintext, no ``\\Seen``, and the
  connection goes on.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.cms.parties import Party, make_party
from tests.integration.conftest import RunningServer
from tests.integration.messages import MULTIPART, SIMPLE, with_marker
from tests.integration.transcoding import (
    OPENPGP,
    SMIME,
    RecordingIMAP4,
    append,
    check_bodystructure,
    check_inner,
    check_outer_header,
    fetch_body,
    fetch_many,
    fetch_parsed,
    login,
    openssl_decrypt,
    pgp_armored,
    provision,
    raw,
    running_server,
    set_mode,
    with_attachment,
)
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys
from transcoder.client import XKeyClient

pytestmark = pytest.mark.integration

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

CAROL, DAVE, ALICE = "carol@example.org", "dave@example.org", "alice@example.org"
MARKER = b"INVARIANT-MARKER-7c1e9a"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("invariants")


@pytest.fixture(scope="module")
def carol(workdir: Path) -> Party:
    """carol@example.org's RSA-3072 key and certificate."""
    return make_party(workdir, "carol", rsa.generate_private_key(65537, 3072))


@pytest.fixture(scope="module")
def inv_server(workdir: Path, carol: Party) -> Iterator[RunningServer]:
    """A server (default S/MIME settings) with carol, her certificate stored, and dave."""
    with running_server(workdir / "server", [CAROL, DAVE]) as server:
        provision(server, CAROL, carol.cert_der, SMIME)
        yield server


@pytest.fixture
def carol_always(inv_server: RunningServer) -> RunningServer:
    """The module's server with carol's policy at MODE ALWAYS (whatever a test left)."""
    set_mode(inv_server, CAROL, "ALWAYS")
    return inv_server


# -- policy OFF and switching -------------------------------------------------------------


def test_policy_off_serves_the_stored_octets(inv_server: RunningServer) -> None:
    """Under MODE OFF, BODY[], sections, RFC822.SIZE and BODYSTRUCTURE are the stored ones."""
    set_mode(inv_server, CAROL, "OFF")
    imap = login(inv_server, CAROL)
    for stored in (SIMPLE, MULTIPART):
        uid = append(imap, stored)
        assert fetch_body(imap, uid) == stored
        assert fetch_body(imap, uid, "TEXT") == stored.partition(b"\r\n\r\n")[2]
        parsed = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        assert parsed[b"RFC822.SIZE"] == len(stored)
        check_bodystructure(parsed[b"BODYSTRUCTURE"], stored)
    imap.logout()


def test_switching_always_then_off(inv_server: RunningServer, carol: Party, tmp_path: Path) -> None:
    """ALWAYS serves the view, OFF the stored octets again, ALWAYS a view again.

    Each switch is made in the selected state, then INBOX is selected again
    (issue 9: the views changed, so it presents a new UIDVALIDITY).
    """
    imap = login(inv_server, CAROL)
    uid = append(imap, SIMPLE)
    validities = [imap.response("UIDVALIDITY")[1]]
    for mode in ("ALWAYS", "OFF", "ALWAYS"):
        XKeyClient(imap).set_policy(mode=mode)
        imap.select("INBOX")
        validities.append(imap.response("UIDVALIDITY")[1])
        assert validities[-1] not in validities[:-1], validities
        body = fetch_body(imap, uid)
        assert fetch_parsed(imap, uid, "(RFC822.SIZE)")[b"RFC822.SIZE"] == len(body)
        if mode == "OFF":
            assert body == SIMPLE
        else:
            check_inner(openssl_decrypt(body, carol, tmp_path), SIMPLE, body)
    imap.logout()


def test_sizes_before_body_equal_the_materialized_view(carol_always: RunningServer) -> None:
    """RFC822.SIZE, BODYSTRUCTURE, ENVELOPE, BINARY.SIZE[] before any BODY[] equal those after."""
    imap = login(carol_always, CAROL)
    long_text = "\r\n".join(["y" * 70] * 1000)
    stored = [SIMPLE, MULTIPART, with_attachment("x"), with_marker(long_text)]
    uids = [append(imap, message) for message in stored]
    items = "(RFC822.SIZE BODYSTRUCTURE ENVELOPE BINARY.SIZE[])"
    predicted = fetch_many(imap, uids, items)
    views = {uid: fetch_body(imap, uid) for uid in uids}
    assert fetch_many(imap, uids, items) == predicted
    for uid, view in views.items():
        assert predicted[uid][b"RFC822.SIZE"] == len(view)
        assert predicted[uid][b"BINARY.SIZE[]"] == len(view)  # RFC 3516: the view's octets
        check_bodystructure(predicted[uid][b"BODYSTRUCTURE"], view)
    imap.logout()


# -- only FETCH sees the view ----------------------------------------------------------------


def search(imap: RecordingIMAP4, *criteria: str) -> list[int]:
    """``UID SEARCH criteria``: the UIDs found."""
    typ, data = imap.uid("SEARCH", *criteria)
    assert typ == "OK", data
    return [int(uid) for uid in data[0].split()]


def test_mailbox_operations_use_the_stored_message(carol_always: RunningServer) -> None:
    """Under ALWAYS, APPEND, SEARCH BODY/TEXT, STORE, COPY and MOVE act on the stored octets."""
    stored = with_marker(MARKER.decode())
    imap = login(carol_always, CAROL)
    uid = append(imap, stored)
    assert search(imap, "BODY", MARKER.decode()) == [uid]
    assert search(imap, "TEXT", MARKER.decode()) == [uid]
    typ, data = imap.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and b"\\Flagged" in raw(data)
    for mailbox in ("Archive", "Moved"):
        assert imap.create(mailbox)[0] == "OK"
    assert imap.uid("COPY", str(uid), "Archive")[0] == "OK"
    assert imap.uid("MOVE", str(uid), "Moved")[0] == "OK"
    assert search(imap, "BODY", MARKER.decode()) == []
    for mailbox in ("Archive", "Moved"):
        assert imap.select(mailbox)[0] == "OK"
        (copied,) = search(imap, "BODY", MARKER.decode())
        assert MARKER not in fetch_body(imap, copied)  # still served transcoded
    imap.logout()
    assert MARKER not in imap.received
    set_mode(carol_always, CAROL, "OFF")
    for mailbox in ("Archive", "Moved"):
        imap = login(carol_always, CAROL, mailbox)
        (copied,) = search(imap, "ALL")
        assert fetch_body(imap, copied) == stored
        assert b"\\Flagged" in fetch_parsed(imap, copied, "(FLAGS)")[b"FLAGS"]
        imap.logout()


def encrypted_messages(carol: Party, pgp: PgpTestKeys) -> dict[str, bytes]:
    """An S/MIME enveloped message, a PGP/MIME one and an inline PGP one, made by real tools."""
    header = b"From: dave@example.org\r\nTo: carol@example.org\r\nSubject: sealed\r\n"
    secret = b"Content-Type: text/plain\r\n\r\n" + MARKER + b"\r\n"
    enveloped = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(secret)
        .add_recipient(carol.cert)
        .encrypt(serialization.Encoding.SMIME, [])
    )
    armored = gpgkeys.gpg(
        pgp.decrypt_home,
        *("--armor", "--trust-model", "always", "--encrypt", "-r", pgp.x25519.fingerprint),
        stdin=secret,
    )
    armored = armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    pgp_mime = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
        b' boundary="enc"\r\n\r\n'
        b"--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        b"--enc\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + b"\r\n--enc--\r\n"
    )
    inline = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + armored
    return {
        "pkcs7-enveloped": header + enveloped.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        "pgp-mime": header + pgp_mime,
        "inline-pgp": header + inline,
    }


def test_encrypted_messages_are_served_as_stored(
    carol_always: RunningServer, carol: Party, pgp: PgpTestKeys
) -> None:
    """Messages already encrypted are not encrypted twice: sizes and octets are the stored ones."""
    imap = login(carol_always, CAROL)
    for name, stored in encrypted_messages(carol, pgp).items():
        uid = append(imap, stored)
        before = fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)")
        assert fetch_body(imap, uid) == stored, name
        assert fetch_parsed(imap, uid, "(RFC822.SIZE BODYSTRUCTURE)") == before
        assert before[b"RFC822.SIZE"] == len(stored)
        check_bodystructure(before[b"BODYSTRUCTURE"], stored)
    imap.logout()


# -- --obscure-subject ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def obscure_server(workdir: Path) -> Iterator[RunningServer]:
    """A server started with --obscure-subject, with olga and alice holding SIMPLE."""
    accounts = ["olga@example.org", ALICE]
    with running_server(workdir / "obscure", accounts, ["--obscure-subject"]) as server:
        for user in accounts:
            imap = login(server, user)
            assert append(imap, SIMPLE) == 1
            imap.logout()
        yield server


@pytest.mark.parametrize("fmt", [SMIME, OPENPGP], ids=str.lower)
def test_obscure_subject(
    obscure_server: RunningServer, workdir: Path, pgp: PgpTestKeys, fmt: str
) -> None:
    """ENVELOPE and the outer header say "[...]"; the decrypted inner entity has the Subject."""
    if fmt == SMIME:
        olga = make_party(workdir, "olga", ec.generate_private_key(ec.SECP256R1()))
        user = "olga@example.org"
        provision(obscure_server, user, olga.cert_der, SMIME)
    else:
        user = ALICE
        provision(obscure_server, user, pgp.x25519.material, OPENPGP)
    imap = login(obscure_server, user)
    assert fetch_parsed(imap, 1, "(ENVELOPE)")[b"ENVELOPE"].subject == b"[...]"
    assert fetch_body(imap, 1, "HEADER.FIELDS (SUBJECT)") == b"Subject: [...]\r\n\r\n"
    view = fetch_body(imap, 1)
    assert b"Quarterly numbers" not in view
    check_outer_header(view, SIMPLE, obscure_subject=True)
    if fmt == SMIME:
        inner = openssl_decrypt(view, olga, workdir)
    else:
        inner = pgp.decrypt(pgp_armored(view)).plaintext
    assert b"\r\nSubject: Quarterly numbers\r\n" in inner
    check_inner(inner, SIMPLE, view, obscure_subject=True)
    imap.logout()


# -- fail closed --------------------------------------------------------------------------------

LITERAL = re.compile(rb"\{\d+\}\r\n")


def refused(imap: RecordingIMAP4, uids: str, items: str, code: str) -> None:
    """``UID FETCH`` is answered ``NO [code]`` with no literal and no marker; NOOP still works."""
    mark = len(imap.received)
    typ, data = imap.uid("FETCH", uids, items)
    assert typ == "NO" and data[0].startswith(f"[{code}]".encode()), data
    sent = bytes(imap.received[mark:])
    assert LITERAL.search(sent) is None and MARKER not in sent, sent
    assert imap.noop()[0] == "OK"


def test_retired_key_fails_closed(inv_server: RunningServer, workdir: Path) -> None:
    """With its only key retired, ALWAYS refuses content with NO [XKEY-NOKEY], no \\Seen."""
    dave = make_party(workdir, "dave", ec.generate_private_key(ec.SECP384R1()))
    imap = login(inv_server, DAVE)
    old, fresh = append(imap, with_marker(MARKER.decode())), append(imap, SIMPLE)
    xkey = XKeyClient(imap)
    key = xkey.provision(dave.cert_der)
    assert key is not None and xkey.set_policy(mode="ALWAYS", format=SMIME).mode == "ALWAYS"
    imap.select("INBOX")  # changed views: selected anew (issue 9)
    assert MARKER not in fetch_body(imap, old)  # a view of it is now cached
    xkey.retire(key.fingerprint)
    imap.select("INBOX")
    for uid in (old, fresh):
        for items in (
            "(BODY[])",
            "(BODY.PEEK[TEXT])",
            "(RFC822)",
            "(RFC822.SIZE BODYSTRUCTURE)",
            "(BINARY[1])",
            "(BINARY.SIZE[])",
        ):
            refused(imap, str(uid), items, "XKEY-NOKEY")
        assert b"\\Seen" not in fetch_parsed(imap, uid, "(FLAGS)")[b"FLAGS"]
    refused(imap, "1:*", "(BODY[])", "XKEY-NOKEY")
    imap.logout()
    assert MARKER not in imap.received


GPG_WRAPPER = """#!/bin/sh
# The real gpg, except that --encrypt does as the file MODE says: exit 2, be killed, or
# take 3 s first.
mode=$(cat "{mode}")
for arg in "$@"; do
    if [ "$arg" = "--encrypt" ]; then
        case "$mode" in
            exit) exit 2 ;;
            kill) kill -KILL $$ ;;
            slow) sleep 3 ;;
        esac
    fi
done
exec "{gpg}" "$@"
"""


@contextlib.contextmanager
def gpg_wrapped_server(
    root: Path, accounts: list[str], pgp: PgpTestKeys, mode: Path
) -> Iterator[RunningServer]:
    """A server whose gpg is GPG_WRAPPER (driven by the file ``mode``); alice's OpenPGP
    key provisioned (validated by the real gpg) and policy FORMAT OPENPGP, MODE ALWAYS."""
    real_gpg = shutil.which("gpg")
    assert real_gpg is not None
    wrapper = root / "gpg-wrapper"
    wrapper.write_text(GPG_WRAPPER.format(mode=mode, gpg=real_gpg))
    wrapper.chmod(0o755)
    with running_server(root, accounts) as server:
        provision(server, ALICE, pgp.x25519.material, OPENPGP)
        server.stop()
        # gpg at FETCH time: the native encoder (issue 12) would never call it.
        server.extra_args = ("--gpg", str(wrapper), "--openpgp-encoder", "gpg")
        server.start()
        yield server


def test_failing_gpg_fails_closed(tmp_path: Path, pgp: PgpTestKeys) -> None:
    """gpg exiting 2 or killed at FETCH time: NO [TRANSCODE-FAILED], logged; then it recovers."""
    stored = with_marker(MARKER.decode())
    mode = tmp_path / "mode"
    with gpg_wrapped_server(tmp_path, [ALICE], pgp, mode) as server:
        imap = login(server, ALICE)
        uids = [append(imap, stored) for _ in range(2)]
        for how, status in (("exit", 2), ("kill", -9)):
            mode.write_text(how)
            refused(imap, str(uids[0]), "(BODY[])", "TRANSCODE-FAILED")
            refused(imap, "1:*", "(RFC822.SIZE BODY.PEEK[TEXT])", "TRANSCODE-FAILED")
            refused(imap, str(uids[1]), "(BINARY[2] BINARY.SIZE[2])", "TRANSCODE-FAILED")
            # Issue 5: the failure is logged with what gpg did.
            assert re.search(f"transcoding failed: .*exit status {status}", server.log.read_text())
        assert b"\\Seen" not in fetch_parsed(imap, uids[0], "(FLAGS)")[b"FLAGS"]
        mode.write_text("pass")
        view = fetch_body(imap, uids[0])
        check_inner(pgp.decrypt(pgp_armored(view)).plaintext, stored, view)
        imap.logout()
        assert MARKER not in imap.received


# -- transcoding off the reactor thread ------------------------------------------------------


def test_slow_transcoding_does_not_stall_other_clients(tmp_path: Path, pgp: PgpTestKeys) -> None:
    """While gpg takes 3 s over one client's view, another client is answered at once."""
    mode = tmp_path / "mode"
    mode.write_text("slow")
    with gpg_wrapped_server(tmp_path, [ALICE, DAVE], pgp, mode) as server:
        fetcher, other = login(server, ALICE), login(server, DAVE)
        uid = append(fetcher, SIMPLE)
        fetcher.send(b"slow UID FETCH %d (BODY.PEEK[])\r\n" % uid)
        time.sleep(0.5)  # gpg is now sleeping in a worker thread
        started = time.monotonic()
        assert other.noop()[0] == "OK"
        waited = time.monotonic() - started
        fetcher.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            assert fetcher.sock.recv(1, socket.MSG_PEEK) == b"", "FETCH answered before the NOOP"
        fetcher.sock.setblocking(True)
        assert waited < 1.5, f"the NOOP waited {waited:.1f} s for another client's transcoding"
        other.logout()
        fetcher.sock.settimeout(30)
        received = b""
        while b"slow OK" not in received:
            chunk = fetcher.sock.recv(65536)
            assert chunk, "connection closed during the FETCH"
            received += chunk
        fetcher.sock.close()
