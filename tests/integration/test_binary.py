"""BINARY (RFC 3516) on the real server with real clients: policy OFF and MODE ALWAYS.

Policy OFF: imaplib's BINARY of a base64 attachment and of a QP part equal
Python's ``email`` decoding; BINARY.SIZE equals the length of BINARY[],
which equals its reassembled partials.  MODE ALWAYS: BINARY items come from
the view like BODY[] -- BINARY[] is the view's octets, BINARY[1] of an
S/MIME view is its DER, which ``openssl cms -decrypt -inform DER`` opens to
the stored message; BINARY[2] of a PGP/MIME view is the armored text gpg
decrypts.  Never the plaintext.
"""

from __future__ import annotations

import email
import re
import subprocess
import uuid
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from imapclient import IMAPClient

from tests.cms.parties import Party, make_party
from tests.cms.peers import OPENSSL, require
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.messages import MULTIPART
from tests.integration.transcoding import (
    OPENPGP,
    SMIME,
    RecordingIMAP4,
    append,
    check_inner,
    fetch,
    fetch_body,
    fetch_parsed,
    large_message,
    login,
    pgp_armored,
    provision,
    running_server,
    set_mode,
    smime_der,
    with_attachment,
)
from tests.mime.test_binary import attachment_message
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys

pytestmark = pytest.mark.integration

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

ERIN, FRANK, GRACE = "erin@example.org", "alice@example.org", "grace@example.org"
MARKER = f"BINARY-CANARY-{uuid.uuid4().hex}"
#: The BINARY forms a MODE ALWAYS client may send (tests/integration/transcoding.FETCH_FORMS).
BINARY_FORMS = (
    "BINARY.SIZE[]",
    "BINARY.SIZE[1]",
    "BINARY.PEEK[]",
    "BINARY.PEEK[1]",
    "BINARY.PEEK[2]",
    "BINARY.PEEK[1]<10.1000>",
    "BINARY[]",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("binary")


@pytest.fixture(scope="module")
def erin(workdir: Path) -> Party:
    """erin@example.org's RSA key and certificate (the S/MIME reader)."""
    return make_party(workdir, "erin", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def binary_server(workdir: Path, erin: Party, pgp: PgpTestKeys) -> Iterator[RunningServer]:
    """erin (S/MIME, ALWAYS), alice (OpenPGP, ALWAYS) and grace (no key, policy OFF)."""
    with running_server(workdir / "server", [ERIN, FRANK, GRACE]) as server:
        provision(server, ERIN, erin.cert_der, SMIME)
        provision(server, FRANK, pgp.x25519.material, OPENPGP)
        yield server


def binary_item(data: list[Any], label: bytes) -> tuple[bytes, bytes]:
    """(the response line up to the literal, the octets) of the literal labelled ``label``."""
    for item in data:
        if isinstance(item, tuple) and re.search(re.escape(label) + rb" ~?\{\d+\}$", item[0]):
            return item[0], bytes(item[1])
    raise AssertionError((label, data))


def email_part(raw: bytes, index: int) -> bytes:
    """Python's email decoding of top-level part ``index`` (0-based)."""
    part = email.message_from_bytes(raw, policy=policy.compat32).get_payload()[index]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


# -- policy OFF -------------------------------------------------------------------------------


def test_imaplib_binary_matches_email_decoding(binary_server: RunningServer) -> None:
    """imaplib: BINARY of a base64 attachment (~{n}) and of a QP part equal email's decoding."""
    imap = login(binary_server, GRACE)
    try:
        assert "BINARY" in imap.capabilities
        raw = attachment_message()
        uid = append(imap, raw)
        data = fetch(imap, uid, "(BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[2])")
        head, attachment = binary_item(data, b"BINARY[2]")
        assert head.endswith(b"~{%d}" % len(attachment))  # RFC 3516 4.3: NUL inside
        assert attachment == email_part(raw, 1)
        text_head, text = binary_item(data, b"BINARY[1]")
        assert text == email_part(raw, 0) and not text_head.endswith(b"~{%d}" % len(text))
        assert b"BINARY.SIZE[2] %d" % len(attachment) in b" ".join(
            i[0] if isinstance(i, tuple) else i for i in data
        )
    finally:
        imap.logout()


def test_size_whole_and_partials_agree(binary_server: RunningServer) -> None:
    """BINARY.SIZE[3] == len(BINARY[3]) == BINARY[3]<o.1000> reassembled (decoded octets)."""
    imap = login(binary_server, GRACE)
    try:
        stored = with_attachment(MARKER)
        uid = append(imap, stored)
        whole = binary_item(fetch(imap, uid, "(BINARY.PEEK[3])"), b"BINARY[3]")[1]
        assert whole == bytes(range(256)) * 96 == email_part(stored, 2)
        size = fetch_parsed(imap, uid, "(BINARY.SIZE[3])")[b"BINARY.SIZE[3]"]
        pieces = [
            binary_item(fetch(imap, uid, f"(BINARY.PEEK[3]<{o}.1000>)"), b"BINARY[3]<%d>" % o)[1]
            for o in range(0, size, 1000)
        ]
        assert size == len(whole) and b"".join(pieces) == whole
    finally:
        imap.logout()


def test_imaplib_appends_literal8_and_binary_sets_seen(binary_server: RunningServer) -> None:
    """An APPEND with ~{n} holding NUL is stored as sent; BINARY sets \\Seen, PEEK does not."""
    imap = login(binary_server, GRACE)
    try:
        message = (
            b"Subject: raw\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02 binary \x00\r\n"
        )
        tag = imap._new_tag()  # imaplib has no literal8: the command by hand
        imap.send(tag + b" APPEND INBOX ~{%d}\r\n" % len(message))
        assert imap.readline().startswith(b"+")
        imap.send(message + b"\r\n")
        answer = imap.readline()
        while answer.startswith(b"* "):  # EXISTS and the like before the tagged answer
            answer = imap.readline()
        assert answer.startswith(tag + b" OK [APPENDUID"), answer
        uid = int(answer.split()[4].rstrip(b"]"))
        assert fetch_body(imap, uid) == message
        fetch(imap, uid, "(BINARY.PEEK[1] BINARY.SIZE[1])")
        assert b"\\Seen" not in b" ".join(fetch(imap, uid, "(FLAGS)")[0:1])
        data = fetch(imap, uid, "(BINARY[1])")
        assert binary_item(data, b"BINARY[1]")[1] == message.partition(b"\r\n\r\n")[2]
        assert b"\\Seen" in fetch(imap, uid, "(FLAGS)")[0]
    finally:
        imap.logout()


def test_unknown_cte_through_imaplib(binary_server: RunningServer) -> None:
    """imaplib sees NO [UNKNOWN-CTE] for an x-uuencode part; BODY.PEEK still serves it."""
    imap = login(binary_server, GRACE)
    try:
        uid = append(
            imap,
            b"Subject: uu\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\n`\r\nend\r\n",
        )
        typ, data = imap.uid("FETCH", str(uid), "(BINARY.PEEK[1])")
        assert typ == "NO" and data[0].startswith(b"[UNKNOWN-CTE]"), data
        assert b"begin 644" in fetch_body(imap, uid, "1")
    finally:
        imap.logout()


def test_imapclient_fetches_binary(binary_server: RunningServer) -> None:
    """imapclient (a second real client) gets BINARY of a QP part and BINARY.SIZE.

    imapclient 3 does not parse a ``~{n}`` literal8 (it returns the atom
    ``~{512}``), so the attachment holding NUL is left to imaplib above.
    """
    imap = login(binary_server, GRACE)
    uid = append(imap, attachment_message())
    imap.logout()
    client = IMAPClient("127.0.0.1", port=binary_server.imap_port, ssl=False, timeout=60)
    try:
        client.login(GRACE, PASSWORD)
        client.select_folder("INBOX")
        assert b"BINARY" in client.capabilities()
        got = client.fetch([uid], [b"BINARY.PEEK[1]", b"BINARY.SIZE[1]", b"BINARY.SIZE[2]"])[uid]
        assert got[b"BINARY[1]"] == email_part(attachment_message(), 0)
        assert got[b"BINARY.SIZE[1]"] == len(got[b"BINARY[1]"])
        assert got[b"BINARY.SIZE[2]"] == len(email_part(attachment_message(), 1))
    finally:
        client.logout()


# -- MODE ALWAYS: BINARY comes from the view -------------------------------------------------


def test_smime_binary_is_the_view(binary_server: RunningServer, erin: Party, workdir: Path) -> None:
    """BINARY[] is the view's BODY[]; BINARY[1] its DER, which openssl cms -decrypt opens."""
    openssl = require(OPENSSL, "openssl")
    imap = login(binary_server, ERIN)
    try:
        stored = with_attachment(MARKER)
        uid = append(imap, stored)
        size = fetch_parsed(imap, uid, "(BINARY.SIZE[] RFC822.SIZE)")  # before any view
        view = fetch_body(imap, uid)
        assert size[b"BINARY.SIZE[]"] == size[b"RFC822.SIZE"] == len(view)
        assert binary_item(fetch(imap, uid, "(BINARY.PEEK[])"), b"BINARY[]")[1] == view
        head, der = binary_item(fetch(imap, uid, "(BINARY.PEEK[1] BINARY.SIZE[1])"), b"BINARY[1]")
        assert der == smime_der(view) and head.endswith(b"~{%d}" % len(der))
        path = workdir / "binary1.der"
        path.write_bytes(der)
        opened = subprocess.run(
            [
                *(openssl, "cms", "-decrypt", "-inform", "DER", "-in", str(path)),
                *("-recip", str(erin.cert_path), "-inkey", str(erin.key_path)),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert opened.returncode == 0, opened.stderr
        check_inner(opened.stdout, stored, view)
        assert MARKER.encode() not in imap.received
    finally:
        imap.logout()


def test_pgp_binary_is_the_view(binary_server: RunningServer, pgp: PgpTestKeys) -> None:
    """Under PGP/MIME, BINARY[2] is the armored part of the view, which gpg decrypts."""
    imap = login(binary_server, FRANK)
    try:
        stored = with_attachment(MARKER)
        uid = append(imap, stored)
        view = fetch_body(imap, uid)
        data = fetch(imap, uid, "(BINARY.PEEK[] BINARY.PEEK[1] BINARY.PEEK[2])")
        assert binary_item(data, b"BINARY[]")[1] == view
        assert binary_item(data, b"BINARY[1]")[1].strip() == b"Version: 1"
        armored = binary_item(data, b"BINARY[2]")[1]
        assert armored == pgp_armored(view)
        check_inner(pgp.decrypt(armored).plaintext, stored, view)
        assert MARKER.encode() not in imap.received
    finally:
        imap.logout()


@pytest.mark.parametrize("user", [ERIN, FRANK])
def test_no_binary_form_shows_the_plaintext(binary_server: RunningServer, user: str) -> None:
    """No BINARY form, cold or cached, alone or together, sends a stored octet in clear."""
    imap = login(binary_server, user)
    try:
        stored = with_attachment(MARKER)
        for uid in (append(imap, stored), append(imap, MULTIPART + MARKER.encode() + b"\r\n")):
            for form in BINARY_FORMS:
                fetch(imap, uid, f"({form})")
            fetch(imap, uid, f"({' '.join(BINARY_FORMS)})")
        assert MARKER.encode() not in imap.received
        # the stored attachment's base64, or its decoded octets, never cross either
        assert bytes(range(256)) * 4 not in imap.received
        assert b"AAECAwQFBgcICQoLDA0ODxAREhMU" not in imap.received
    finally:
        imap.logout()


def test_policy_change_switches_binary(binary_server: RunningServer) -> None:
    """erin at MODE OFF gets the stored part decoded; back at ALWAYS, the view's DER."""
    set_mode(binary_server, ERIN, "OFF")
    try:
        imap: RecordingIMAP4 = login(binary_server, ERIN)
        stored = with_attachment(MARKER)
        uid = append(imap, stored)
        assert binary_item(fetch(imap, uid, "(BINARY.PEEK[3])"), b"BINARY[3]")[1] == (
            bytes(range(256)) * 96
        )
        imap.logout()
    finally:
        set_mode(binary_server, ERIN, "ALWAYS")
    imap = login(binary_server, ERIN)
    try:
        view = fetch_body(imap, uid)
        assert binary_item(fetch(imap, uid, "(BINARY.PEEK[1])"), b"BINARY[1]")[1] == smime_der(view)
        typ, data = imap.uid("FETCH", str(uid), "(BINARY.PEEK[3])")
        assert typ == "OK"  # part 3 does not exist in the view: empty, never the stored part
        assert binary_item(data, b"BINARY[3]")[1] == b""
    finally:
        imap.logout()


def test_cold_large_view_binary(binary_server: RunningServer, erin: Party, workdir: Path) -> None:
    """A 2 MB message's first FETCH is BINARY[1] of its streamed view: the DER openssl opens."""
    openssl = require(OPENSSL, "openssl")
    imap = login(binary_server, ERIN)
    try:
        stored = large_message(MARKER, 2 * 1024 * 1024)
        uid = append(imap, stored)
        data = fetch(imap, uid, "(BINARY.SIZE[1] BINARY.PEEK[1])")  # cold: nothing cached
        der = binary_item(data, b"BINARY[1]")[1]
        assert b"BINARY.SIZE[1] %d" % len(der) in data[0][0]
        path = workdir / "cold.der"
        path.write_bytes(der)
        opened = subprocess.run(
            [
                *(openssl, "cms", "-decrypt", "-inform", "DER", "-in", str(path)),
                *("-recip", str(erin.cert_path), "-inkey", str(erin.key_path)),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout.partition(b"\r\n\r\n")[2] == stored.partition(b"\r\n\r\n")[2]
        assert der == smime_der(fetch_body(imap, uid))
        assert MARKER.encode() not in imap.received
    finally:
        imap.logout()


def test_readme_transcript(binary_server: RunningServer) -> None:
    """The README's BINARY transcript (IMAP conformance, item 21) is what the server sends."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme[readme.index("C: a UID FETCH 7 (BINARY") :].split("```")[0]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    command = lines[0].removeprefix("C: a UID FETCH 7 ")
    first_answer = lines[1].removeprefix("S: ")
    imap = login(binary_server, GRACE)
    try:
        uid = append(imap, with_attachment(MARKER))
        data = fetch(imap, uid, command)
        seq = data[0][0].split()[0].decode()
        # imaplib hands back the response without "* " and "FETCH "
        expected = first_answer.replace("* 1 FETCH ", f"{seq} ", 1).replace("UID 7", f"UID {uid}")
        assert data[0][0].decode() == expected
        assert data[0][1] == (bytes(range(256)) * 96)[:16]
        assert b"\x00" in data[0][1]  # hence the ~{16}
    finally:
        imap.logout()
