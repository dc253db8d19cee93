"""CONVERT (RFC 5259) on the real server (``twistd -n transcoder``), imaplib and real peers.

bob@example.org holds an S/MIME certificate, alice@example.org an OpenPGP
key, both under MODE OFF (CONVERT is encryption on request); carol has no
key.  What the server sends is opened with ``openssl cms -decrypt`` and
``gpg --decrypt`` only, never our own decryptor.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cms.parties import Party, make_party
from tests.cms.peers import OPENSSL, require
from tests.convert.support import ATTACHMENT, LATIN1_TEXT, MESSAGE, UTF8_TEXT, part_entity
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.transcoding import RecordingIMAP4, append, login, running_server
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys
from transcoder.client import XKeyClient, XKeyError, main

pytestmark = pytest.mark.integration
pgp = gpgkeys.pgp

BOB, ALICE, CAROL = "bob@example.org", "alice@example.org", "carol@example.org"
DAVE = "dave@example.org"
MARKER = b"LEAK-CANARY-convert-integration"
imaplib.Commands.setdefault("CONVERT", ("SELECTED",))
imaplib.Commands.setdefault("CONVERSIONS", ("AUTH", "SELECTED"))


@dataclass(frozen=True)
class Setup:
    """The running server, bob's S/MIME identity, and the UID of MESSAGE in each INBOX."""

    server: RunningServer
    bob: Party
    uid: int
    workdir: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, pgp: PgpTestKeys) -> Iterator[Setup]:
    """One server; bob (certificate), alice (OpenPGP key), carol (none), MESSAGE in each INBOX."""
    root = tmp_path_factory.mktemp("convert")
    # Literals up to 128 MiB: one test APPENDs a message of 68 MB.
    big = ("--max-literal-size", str(128 * 1024 * 1024))
    with running_server(root, [BOB, ALICE, CAROL, DAVE], big) as server:
        bob = make_party(root, "bob", rsa.generate_private_key(65537, 3072))
        dave = make_party(root, "dave", rsa.generate_private_key(65537, 2048))
        keys = ((BOB, bob.cert_der), (ALICE, pgp.x25519.material), (DAVE, dave.cert_der))
        for user, material in keys:
            imap = login(server, user, None)
            assert XKeyClient(imap).provision(material) is not None
            if user == DAVE:
                XKeyClient(imap).set_policy(mode="ALWAYS", format="SMIME")
            imap.logout()
        uids = set()
        for user in (BOB, ALICE, CAROL, DAVE):
            imap = login(server, user)
            marked = MESSAGE.replace(b"Gr=FC=DFe", MARKER + b" Gr=FC=DFe")
            uids.add(append(imap, marked if user == DAVE else MESSAGE))
            imap.logout()
        (uid,) = uids
        yield Setup(server, bob, uid, root)


def convert(imap: imaplib.IMAP4, uid: int, params: str, items: str) -> tuple[str, list[Any]]:
    """``UID CONVERT uid params items`` with imaplib; (status, the CONVERTED data)."""
    imap.response("CONVERTED")
    typ, _ = imap._simple_command("UID", "CONVERT", str(uid), params, items)
    _, converted = imap.response("CONVERTED")
    return typ, [d for d in converted if d is not None]


def literal(data: list[Any], label: bytes) -> bytes:
    """The literal following ``label`` (e.g. ``BINARY[2]``) in imaplib's data."""
    for item in data:
        if isinstance(item, tuple) and re.search(re.escape(label) + rb" ~?\{\d+\}$", item[0]):
            return bytes(item[1])
    raise AssertionError(f"no {label!r} literal in {data!r}")


def openssl_der(der: bytes, party: Party, workdir: Path) -> bytes:
    """``openssl cms -decrypt -inform DER``: the plaintext."""
    path = workdir / "part.p7m"
    path.write_bytes(der)
    done = subprocess.run(
        [
            *(require(OPENSSL, "openssl"), "cms", "-decrypt", "-binary", "-inform", "DER"),
            *("-in", str(path), "-recip", str(party.cert_path), "-inkey", str(party.key_path)),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_done_when_conversions_lists_encryption_and_an_attachment_opens_with_openssl(
    setup: Setup,
) -> None:
    """As a new user: CAPABILITY has CONVERT, CONVERSIONS lists application/pkcs7-mime, and
    CONVERT ... BINARY[2] of the attachment opens with openssl to part 2 as a MIME entity."""
    imap = login(setup.server, BOB)
    assert "CONVERT" in imap.capabilities
    typ, _ = imap._simple_command("CONVERSIONS", '"*"', '"application/*"')
    _, lines = imap.response("CONVERSION")
    assert typ == "OK"
    assert b'"application/octet-stream" "application/pkcs7-mime" ("smime-cipher")' in lines
    typ, data = convert(imap, setup.uid, '("application/pkcs7-mime")', "BINARY[2]")
    assert typ == "OK", data
    plain = openssl_der(literal(data, b"BINARY[2]"), setup.bob, setup.workdir)
    assert plain == part_entity(2)
    attachment = message_from_bytes(plain, policy=policy.default)
    assert attachment.get_content() == ATTACHMENT and attachment.get_filename() == "table.bin"
    imap.logout()


def test_gpg_decrypts_the_pgp_mime_conversion(setup: Setup, pgp: PgpTestKeys) -> None:
    """CONVERT ... ("multipart/encrypted") BINARY[2]: gpg --decrypt yields part 2's entity."""
    imap = login(setup.server, ALICE)
    typ, data = convert(
        imap, setup.uid, '("multipart/encrypted")', "(BODYPARTSTRUCTURE[2] BINARY[2])"
    )
    assert typ == "OK", data
    head = next(item[0] for item in data if isinstance(item, tuple))
    boundary = re.search(rb'"boundary" "([^"]+)"', head).group(1)  # type: ignore[union-attr]
    body = literal(data, b"BINARY[2]")
    entity = b'Content-Type: multipart/encrypted; boundary="%s"\r\n\r\n' % boundary + body
    encrypted = message_from_bytes(entity, policy=policy.compat32).get_payload()[1]
    assert pgp.decrypt(str(encrypted.get_payload()).encode()).plaintext == part_entity(2)
    imap.logout()


def test_without_a_key_the_part_is_an_error_and_the_command_no(setup: Setup) -> None:
    """carol has no key: ERROR BADPARAMETERS in CONVERTED and a tagged NO; no octet of the part."""
    imap = login(setup.server, CAROL)
    typ, data = convert(imap, setup.uid, '("application/pkcs7-mime")', "BINARY[2]")
    assert typ == "NO"
    text = b"".join(d if isinstance(d, bytes) else d[0] for d in data)
    assert b"(ERROR " in text and b"BADPARAMETERS" in text
    assert not any(isinstance(d, tuple) for d in data)
    imap.logout()


def test_size_whole_and_partials_agree_and_two_sessions_see_the_same_octets(
    setup: Setup,
) -> None:
    """BINARY.SIZE == len(BINARY[]) == the reassembled <o.n> slices; a second session (and the
    server's view secret) gives the same octets."""
    params = '("application/pkcs7-mime" ("smime-cipher" "aes256-gcm"))'
    first = login(setup.server, BOB)
    _, data = convert(first, setup.uid, params, "BINARY.SIZE[2]")
    size = int(re.search(rb"BINARY\.SIZE\[2\] (\d+)", data[0]).group(1))  # type: ignore[union-attr]
    _, data = convert(first, setup.uid, params, "BINARY[2]")
    whole = literal(data, b"BINARY[2]")
    pieces = b""
    for origin in range(0, size, 4000):
        _, data = convert(first, setup.uid, params, f"BINARY[2]<{origin}.4000>")
        pieces += literal(data, b"BINARY[2]<%d>" % origin)
    assert size == len(whole) == len(pieces) and pieces == whole
    second = login(setup.server, BOB)
    _, data = convert(second, setup.uid, params, "BINARY[2]")
    assert literal(data, b"BINARY[2]") == whole
    assert openssl_der(whole, setup.bob, setup.workdir) == part_entity(2)
    first.logout()
    second.logout()


def _kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory figure, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def test_a_part_over_64_mib_converts_in_constant_memory(setup: Setup) -> None:
    """A 68 MB base64 attachment (more than the 64 MiB the in-memory engine took) converts
    to application/pkcs7-mime; openssl opens it to the part; the server's peak RSS grows by
    less than 40 MiB meanwhile (the part, the DER and the response are never held whole)."""
    payload = os.urandom(50_000_000)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    header = b'Content-Type: application/octet-stream; name="big.bin"\r\n'
    header += b"Content-Transfer-Encoding: base64\r\n\r\n"
    message = (
        b"From: Bob <bob@example.org>\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n"
        + header
        + encoded
        + b"--b1--\r\n"
    )
    imap = login(setup.server, BOB)
    assert imap.create("Big")[0] == "OK"
    uid = append(imap, message, "Big")
    assert imap.select("Big")[0] == "OK"
    assert setup.server.process is not None
    pid = setup.server.process.pid
    before = _kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
    typ, data = convert(imap, uid, '("application/pkcs7-mime")', "BINARY[2]")
    growth = _kib(pid, "VmHWM") - before
    assert typ == "OK", data[:1]
    der = literal(data, b"BINARY[2]")
    del data
    plain = openssl_der(der, setup.bob, setup.workdir)
    assert hashlib.sha256(plain).digest() == hashlib.sha256(header + encoded[:-2]).digest()
    assert growth < 40 * 1024, f"peak RSS grew by {growth} KiB"
    imap.logout()


def test_a_latin1_part_to_utf8(setup: Setup) -> None:
    """Part 1 (ISO-8859-1, quoted-printable) converted to UTF-8 with imaplib."""
    imap = login(setup.server, CAROL)
    typ, data = convert(imap, setup.uid, '("text/plain" ("charset" "utf-8"))', "BINARY[1]")
    assert typ == "OK"
    assert literal(data, b"BINARY[1]").decode("utf-8") == LATIN1_TEXT
    imap.logout()


def test_utf8_to_latin1_fails_without_replacement_and_succeeds_with_it(setup: Setup) -> None:
    """Part 3 (UTF-8, characters outside latin-1) to iso-8859-1: ERROR and NO; with
    unknown-character-replacement "?": the text with "?" for each of them."""
    imap = login(setup.server, CAROL)
    typ, data = convert(imap, setup.uid, '("text/plain" ("charset" "iso-8859-1"))', "BINARY[3]")
    assert typ == "NO" and b"BADPARAMETERS" in data[0]
    params = '("text/plain" ("charset" "iso-8859-1" "unknown-character-replacement" "?"))'
    typ, data = convert(imap, setup.uid, params, "BINARY[3]")
    assert typ == "OK"
    expected = "".join(c if ord(c) < 256 else "?" for c in UTF8_TEXT).encode("latin-1")
    assert literal(data, b"BINARY[3]") == expected
    imap.logout()


def test_the_client_library_and_command_line_convert(setup: Setup, tmp_path: Path) -> None:
    """XKeyClient.convert and ``transcoder-client convert ... -o FILE`` write the DER that
    openssl opens; a refusal is exit status 1 with the ERROR phrase's code."""
    with XKeyClient.connect("127.0.0.1", setup.server.imap_port, BOB, PASSWORD, "plain") as client:
        listed = client.conversions("*", "application/pkcs7-mime")
        assert any(c.parameters == ("smime-cipher",) for c in listed)
        part = client.convert("INBOX", setup.uid, "2", "application/pkcs7-mime")
        assert openssl_der(part.data, setup.bob, setup.workdir) == part_entity(2)
        with pytest.raises(XKeyError) as refused:
            client.convert("INBOX", setup.uid, "2", "multipart/encrypted")
        assert refused.value.code == "BADPARAMETERS"
    common = ["--host", "127.0.0.1", "--port", str(setup.server.imap_port), "--plain"]
    env = {"TRANSCODER_USER": BOB, "TRANSCODER_PASSWORD": PASSWORD}
    out_file = tmp_path / "part.p7m"
    args = [*common, "convert", "INBOX", str(setup.uid), "2", "application/pkcs7-mime"]
    assert main([*args, "-o", str(out_file)], environ=env) == 0
    assert openssl_der(out_file.read_bytes(), setup.bob, setup.workdir) == part_entity(2)
    refused_args = [*common, "convert", "INBOX", str(setup.uid), "3", "text/plain"]
    assert main([*refused_args, "--param", "charset", "us-ascii"], environ=env) == 1


def test_mode_always_convert_never_reveals_the_body(setup: Setup) -> None:
    """dave is under MODE ALWAYS: every CONVERT works on his view, so no plaintext conversion
    sends the stored text -- not the marker, not the converted text -- over the wire."""
    imap = RecordingIMAP4("127.0.0.1", setup.server.imap_port)
    imap.login(DAVE, PASSWORD)
    imap.select("INBOX")
    for params, items in (
        ('("text/plain" ("charset" "utf-8"))', "(BINARY[1] BODYPARTSTRUCTURE[1] BINARY[3])"),
        ('(NIL ("charset" "utf-8"))', "(BINARY[1] BINARY[] BODY[HEADER])"),
        ("(NIL)", "(BINARY[1] BINARY[1.1] AVAILABLECONVERSIONS[1])"),
        ('("text/plain" ("charset" "iso-8859-1"))', "BINARY[1.3]"),
    ):
        convert(imap, setup.uid, params, items)
    received = bytes(imap.received)
    assert b"CONVERTED" in received
    assert MARKER not in received and LATIN1_TEXT.encode("utf-8") not in received
    assert UTF8_TEXT.encode("utf-8") not in received and b"K=F6ln" not in received
    imap.logout()


def _normal(text: bytes, tag: bytes | None = None) -> bytes:
    """Sizes (4 digits or more) as N and the command tag as T: a certificate's size and
    imaplib's tags differ from the README's example."""
    text = re.sub(rb"\b\d{4,}\b", b"N", text)
    return text if tag is None else text.replace(b'(TAG "%s")' % tag, b'(TAG "T")')


def test_readme_transcript(setup: Setup) -> None:
    """The README's CONVERT transcript (Encryption on request) is what the server answers,
    line by line (bob for the README's user, sizes and tags aside)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme[readme.index('C: a CONVERSIONS "*" "application/pkcs7-mime"') :]
    lines = [ln.strip() for ln in block.split("```")[0].splitlines() if ln.strip()]
    imap = login(setup.server, BOB)
    commands = [i for i, ln in enumerate(lines) if ln.startswith("C: ")]
    for start, end in zip(commands, [*commands[1:], len(lines)], strict=True):
        tag, command = lines[start][3:].split(" ", 1)
        answers = [ln[3:].encode() for ln in lines[start + 1 : end]]
        words = command.replace(" 7 ", f" {setup.uid} ").split(" ", 3 if "UID" in command else 2)
        kind = "CONVERSION" if words[0] == "CONVERSIONS" else "CONVERTED"
        imap.response(kind)
        typ, data = imap._simple_command(*words)
        _, untagged = imap.response(kind)
        real_tag = imap.tagpre + str(imap.tagnum - 1).encode()  # the tag just used
        status = answers[-1].split(b" ", 2)
        assert typ == status[1].decode() and data[-1] == status[2], (command, typ, data)
        expected = [a for a in answers[:-1] if a.startswith(b"* ")]
        got = [u[0] if isinstance(u, tuple) else u for u in untagged if u not in (None, b")")]
        literals = [u[1] for u in untagged if isinstance(u, tuple)]
        assert all(len(x) == 8192 and b"\0" in x for x in literals)  # hence ~{8192}
        assert len(got) == len(expected), (command, got)
        for line, answer in zip(got, expected, strict=True):
            shown = answer.removeprefix(b"* ").removeprefix(b"CONVERSION ")
            shown = shown.replace(b"1 CONVERTED ", b"1 ", 1).replace(
                b"UID 7", b"UID %d" % setup.uid
            )
            assert _normal(line, real_tag) == _normal(shown, tag.encode()), (line, shown)
    imap.logout()
