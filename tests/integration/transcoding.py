"""Shared helpers of the transcoded-FETCH end-to-end tests (issues 4 and 5).

The tests drive the real server (``twistd -n transcoder``, started with
:class:`~tests.integration.conftest.RunningServer`) with the stdlib's
imaplib, provision keys with :class:`transcoder.client.XKeyClient` and open
what the server sent with real decryptors only: ``openssl cms -decrypt``,
``gpgsm`` (:class:`tests.cms.peers.GpgsmHome`), cryptography's
``pkcs7_decrypt_smime`` and ``gpg --decrypt``
(:class:`tests.openpgp.gpgkeys.PgpTestKeys`).  Never our own decryptor.

What the decrypted inner entity must be (RFC 9788 header protection) is
written out independently here, in :func:`expected_inner`, rather than
computed with :mod:`transcoder.mime.protect`.
"""

from __future__ import annotations

import base64
import imaplib
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

from imapclient.response_parser import parse_fetch_response

from tests.cms.parties import Party
from tests.cms.peers import OPENSSL, require
from tests.integration.conftest import PASSWORD, RunningServer, admin, free_port
from transcoder.client import KeyInfo, XKeyClient

SMIME, OPENPGP = "SMIME", "OPENPGP"
#: Octets per partial FETCH when a view is reassembled from ``<o.n>`` slices.
CHUNK = 1000
#: Every FETCH form that carries content, size or structure (RFC 3501 section 6.4.5);
#: those that need no content first, so that on a fresh message they come before any view.
FETCH_FORMS = (
    "RFC822.SIZE",
    "BODYSTRUCTURE",
    "ENVELOPE",
    "BODY",
    "BODY[]",
    "BODY.PEEK[]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[]<0.100>",
    "BODY.PEEK[TEXT]<100.400>",
    "BODY.PEEK[1]<10.1000>",
    "RFC822",
    "RFC822.TEXT",
    "RFC822.HEADER",
    "BINARY.SIZE[]",  # RFC 3516: content items served from the view like BODY[]
    "BINARY.SIZE[1]",
    "BINARY.PEEK[]",
    "BINARY.PEEK[1]",
    "BINARY.PEEK[2]",
    "BINARY.PEEK[1]<10.1000>",
    "BINARY[]",
)


class RecordingIMAP4(imaplib.IMAP4):
    """imaplib's client, keeping a copy of every octet the server sent on this connection."""

    def __init__(self, host: str, port: int) -> None:
        self.received = bytearray()
        super().__init__(host, port, timeout=120)

    def read(self, size: int) -> bytes:
        """Read ``size`` octets (a literal), recording them."""
        data = super().read(size)
        self.received += data
        return data

    def readline(self) -> bytes:
        """Read a line, recording it."""
        line = super().readline()
        self.received += line
        return line


# -- the server ---------------------------------------------------------------------------


@contextmanager
def running_server(
    root: Path, accounts: Sequence[str], extra_args: Sequence[str] = ()
) -> Iterator[RunningServer]:
    """A server on a fresh data directory under ``root`` with ``accounts`` (PASSWORD)."""
    data = root / "data"
    for address in accounts:
        result = admin(data, "user", "add", address, stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
    server = RunningServer(data, free_port(), free_port(), tuple(extra_args))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def login(server: RunningServer, user: str, mailbox: str | None = "INBOX") -> RecordingIMAP4:
    """A recording imaplib session of ``user`` (plaintext LOGIN is allowed from loopback)."""
    imap = RecordingIMAP4("127.0.0.1", server.imap_port)
    imap.login(user, PASSWORD)
    if mailbox is not None:
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
    return imap


def provision(server: RunningServer, user: str, material: bytes, fmt: str) -> KeyInfo:
    """XKEY PUT ``material`` for ``user``, then POLICY FORMAT ``fmt`` and MODE ALWAYS."""
    imap = login(server, user, None)
    try:
        xkey = XKeyClient(imap)
        stored = xkey.provision(material)
        assert stored is not None and stored.status == "ACTIVE", stored
        xkey.set_policy(mode="ALWAYS", format=fmt)
        return stored
    finally:
        imap.logout()


def set_mode(server: RunningServer, user: str, mode: str) -> None:
    """XKEY POLICY MODE ``mode`` for ``user``."""
    imap = login(server, user, None)
    try:
        assert XKeyClient(imap).set_policy(mode=mode).mode == mode
    finally:
        imap.logout()


def append(imap: imaplib.IMAP4, message: bytes, mailbox: str = "INBOX") -> int:
    """APPEND ``message``; its UID, from the APPENDUID response code (RFC 4315)."""
    typ, data = imap.append(mailbox, None, None, message)
    assert typ == "OK", data
    match = re.search(rb"\[APPENDUID \d+ (\d+)\]", data[0])
    assert match, data
    return int(match.group(1))


def fetch(imap: imaplib.IMAP4, uid: int, items: str) -> list[Any]:
    """``UID FETCH uid items``; imaplib's data (the command must succeed)."""
    typ, data = imap.uid("FETCH", str(uid), items)
    assert typ == "OK", data
    return data


def fetch_parsed(imap: imaplib.IMAP4, uid: int, items: str) -> dict[bytes, Any]:
    """``UID FETCH``, its items parsed by imapclient's response parser (an independent one)."""
    return parse_fetch_response(fetch(imap, uid, items))[uid]


def fetch_many(imap: imaplib.IMAP4, uids: Sequence[int], items: str) -> dict[int, Any]:
    """``UID FETCH`` of several messages, parsed by imapclient: ``{uid: {item: value}}``."""
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), items)
    assert typ == "OK", data
    parsed = parse_fetch_response(data)
    return {uid: {k: v for k, v in d.items() if k != b"SEQ"} for uid, d in parsed.items()}


def fetch_body(imap: imaplib.IMAP4, uid: int, section: str = "") -> bytes:
    """``BODY.PEEK[section]`` of ``uid``."""
    (item,) = [d for d in fetch(imap, uid, f"(BODY.PEEK[{section}])") if isinstance(d, tuple)]
    return bytes(item[1])


def raw(data: list[Any]) -> bytes:
    """Everything imaplib returned for a command, response lines and literals."""
    parts: list[bytes] = []
    for item in data:
        parts.extend(item if isinstance(item, tuple) else [item or b""])
    return b"".join(parts)


def partial(imap: imaplib.IMAP4, uid: int, offset: int, length: int = CHUNK) -> bytes:
    """``BODY.PEEK[]<offset.length>`` of ``uid``; the label is checked (RFC 3501 section 7.4.2)."""
    (item,) = [d for d in fetch(imap, uid, f"(BODY.PEEK[]<{offset}.{length}>)") if d != b")"]
    assert item[0].endswith(b"BODY[]<%d> {%d}" % (offset, len(item[1]))), item[0]
    assert len(item[1]) <= length
    return bytes(item[1])


def reassemble(imap: imaplib.IMAP4, uid: int, size: int, chunk: int = CHUNK) -> bytes:
    """``BODY.PEEK[]<o.chunk>`` for o = 0, chunk, ... up to ``size``, joined."""
    return b"".join(partial(imap, uid, offset, chunk) for offset in range(0, size, chunk))


# -- what a view must contain ----------------------------------------------------------------


def is_structural(name: str) -> bool:
    """MIME-Version and Content-* (RFC 9788's structural fields)."""
    lowered = name.strip().lower()
    return lowered == "mime-version" or lowered.startswith("content-")


def expected_inner(stored: bytes, obscure_subject: bool = False) -> bytes:
    """The inner entity RFC 9788 asks for, for a stored message with one-line fields.

    The original fields in order, ``hp="cipher"`` added to Content-Type
    (section 2.1; a missing one is the RFC 2045 default), then an
    ``HP-Outer`` field for every non-structural field left on the outer
    header (section 2.2: ``hcp_baseline`` shows Subject as ``[...]``), then
    the stored body, octet for octet.
    """
    head, _, body = stored.partition(b"\r\n\r\n")
    fields = head.split(b"\r\n")
    assert all(f[:1] not in (b" ", b"\t") for f in fields), "folded fields are not modelled"
    inner, hp_outer = [], []
    for field in fields:
        name = field.split(b":", 1)[0].decode().lower()
        inner.append(field + b';\r\n hp="cipher"' if name == "content-type" else field)
        if is_structural(name) or (obscure_subject and name in ("comments", "keywords")):
            continue
        shown = b"Subject: [...]" if obscure_subject and name == "subject" else field
        hp_outer.append(b"HP-Outer: " + shown)
    if not any(f.lower().startswith(b"content-type:") for f in fields):
        inner.append(b'Content-Type: text/plain; charset=us-ascii; hp="cipher"')
    return b"\r\n".join(inner + hp_outer) + b"\r\n\r\n" + body


def check_inner(inner: bytes, stored: bytes, view: bytes, obscure_subject: bool = False) -> None:
    """``inner`` (decrypted from ``view``) is ``stored`` under header protection.

    Checked twice: octet for octet against :func:`expected_inner`, and with
    Python's email parser: the stored body unchanged, every original field
    inside, and the ``HP-Outer`` fields naming exactly the outer header the
    server sent.
    """
    assert inner == expected_inner(stored, obscure_subject)
    assert inner.partition(b"\r\n\r\n")[2] == stored.partition(b"\r\n\r\n")[2]
    parsed = message_from_bytes(inner, policy=policy.compat32)
    original = message_from_bytes(stored, policy=policy.compat32)
    for name, value in original.items():
        if name.lower() != "content-type":
            assert value in parsed.get_all(name, []), (name, value)
    assert parsed.get_param("hp") == "cipher"
    outer = message_from_bytes(view, policy=policy.compat32)
    shown = [f"{name}: {value}" for name, value in outer.items() if not is_structural(name)]
    assert parsed.get_all("HP-Outer", []) == shown


def check_outer_header(view: bytes, stored: bytes, obscure_subject: bool = False) -> None:
    """The view's non-structural fields are the stored ones (Subject ``[...]`` if obscured)."""
    outer = message_from_bytes(view, policy=policy.compat32)
    original = message_from_bytes(stored, policy=policy.compat32)
    expected = [
        (name, "[...]" if obscure_subject and name.lower() == "subject" else value)
        for name, value in original.items()
        if not is_structural(name)
    ]
    assert [(n, v) for n, v in outer.items() if not is_structural(n)] == expected


def leaf_sizes(view: bytes) -> list[tuple[str, int, int]]:
    """(media type, octets, lines) of each leaf part of ``view``, by Python's email parser.

    A last line without a line end counts as a line, as the server counts them.
    """
    sizes = []
    for part in message_from_bytes(view, policy=policy.compat32).walk():
        if not part.is_multipart():
            body = str(part.get_payload()).encode("ascii", "surrogateescape")
            lines = body.count(b"\n") + (not body.endswith(b"\n") and bool(body))
            sizes.append((part.get_content_type(), len(body), lines))
    return sizes


def bodystructure_sizes(structure: Any) -> list[tuple[str, int, int]]:
    """(media type, octets, lines or -1) of each leaf of an imapclient BODYSTRUCTURE."""
    if structure.is_multipart:
        return [size for part in structure[0] for size in bodystructure_sizes(part)]
    media = f"{structure[0].decode()}/{structure[1].decode()}".lower()
    lines = int(structure[7]) if media.startswith("text/") else -1
    return [(media, int(structure[6]), lines)]


def check_bodystructure(structure: Any, view: bytes) -> None:
    """BODYSTRUCTURE's types, octet and line counts are those of ``view``'s parts."""
    parsed = bodystructure_sizes(structure)
    found = leaf_sizes(view)
    assert [(t, s) for t, s, _ in parsed] == [(t, s) for t, s, _ in found]
    for (_, _, lines), (_, _, counted) in zip(parsed, found, strict=True):
        assert lines in (-1, counted)


# -- opening a view with real decryptors -------------------------------------------------------


def smime_parts(view: bytes, authenticated: bool = False) -> Message:
    """The view parsed, checked to be one ``application/pkcs7-mime`` in base64 (RFC 8551 3.3)."""
    message = message_from_bytes(view, policy=policy.compat32)
    assert message.get_content_type() == "application/pkcs7-mime"
    wanted = "authEnveloped-data" if authenticated else "enveloped-data"
    assert message.get_param("smime-type") == wanted
    assert message["Content-Transfer-Encoding"].lower() == "base64"
    return message


def smime_der(view: bytes) -> bytes:
    """The DER ContentInfo the view's base64 body carries."""
    payload = smime_parts(view).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def openssl_decrypt(view: bytes, party: Party, workdir: Path) -> bytes:
    """``openssl cms -decrypt -in view.eml -recip cert.pem -inkey key.pem``: the inner entity."""
    openssl = require(OPENSSL, "openssl")
    path = workdir / "view.eml"
    path.write_bytes(view)
    result = subprocess.run(
        [
            *(openssl, "cms", "-decrypt", "-in", str(path)),
            *("-recip", str(party.cert_path), "-inkey", str(party.key_path)),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def pgp_armored(view: bytes) -> bytes:
    """The armored message of a PGP/MIME view, its RFC 3156 section 4 structure checked."""
    message = message_from_bytes(view, policy=policy.compat32)
    assert message.get_content_type() == "multipart/encrypted"
    assert message.get_param("protocol") == "application/pgp-encrypted"
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    control, encrypted = parts
    assert isinstance(control, Message) and isinstance(encrypted, Message)
    assert control.get_content_type() == "application/pgp-encrypted"
    assert str(control.get_payload()).strip() == "Version: 1"
    assert encrypted.get_content_type() == "application/octet-stream"
    armored = str(encrypted.get_payload()).encode("ascii")
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\r\n")
    assert armored.rstrip().endswith(b"-----END PGP MESSAGE-----")
    return armored


# -- test messages ------------------------------------------------------------------------------


def with_attachment(marker: str) -> bytes:
    """multipart/mixed: a text part and a text attachment holding ``marker``, a binary one."""
    binary = base64.encodebytes(bytes(range(256)) * 96).replace(b"\n", b"\r\n")
    return (
        b"From: Bob <bob@example.org>\r\n"
        b"To: Alice <alice@example.org>\r\n"
        b"Subject: Report with attachments\r\n"
        b"Date: Thu, 09 Feb 2024 09:15:00 +0000\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"The report is attached: " + marker.encode() + b"\r\n"
        b"--b1\r\n"
        b'Content-Type: text/plain; name="notes.txt"\r\n'
        b'Content-Disposition: attachment; filename="notes.txt"\r\n'
        b"\r\n"
        b"Notes, first line.\r\n" + marker.encode() + b"\r\n"
        b"--b1\r\n"
        b'Content-Type: application/octet-stream; name="table.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="table.bin"\r\n'
        b"\r\n" + binary + b"--b1--\r\n"
    )


def large_message(marker: str, size: int = 5 * 1024 * 1024) -> bytes:
    """A text message of about ``size`` octets, ``marker`` on its first, middle and last line."""
    header = (
        b"From: sender@example.net\r\nTo: alice@example.org\r\nSubject: large\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;\r\n"
    count = size // len(line)
    lines = [line] * count
    for index in (0, count // 2, count - 1):
        lines[index] = marker.encode() + b"\r\n"
    return header + b"".join(lines)
