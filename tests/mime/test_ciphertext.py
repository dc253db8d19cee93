"""The already-ciphertext check (transcoder.mime.ciphertext): real ciphertext only, streaming.

Genuine messages come from ``openssl cms -encrypt`` and ``gpg --encrypt``;
look-alikes are issue 8's crafted shapes (tests/mime/ciphertext_samples.py)
and targeted damage to genuine ones.  The lower layers (strict base64,
CRC-24, the OpenPGP packet walker, the BER walker) are tested on hand-built
octets; hypothesis mutates genuine messages.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from tests.cms.parties import Party, make_party
from tests.mime.ciphertext_samples import (
    HEADER,
    Genuine,
    body_of,
    gpg_armored,
    inline_pgp,
    look_alikes,
    openssl_cms,
    pgp_mime,
    smime_enveloped,
    smime_signed,
)
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys
from transcoder.mime.entity import parse_message
from transcoder.mime.protect import parse_top_level

#: The OpenPGP keys of tests/openpgp (secret halves in a separate home); a fixture.
pgp = gpgkeys.pgp

MARKER = b"CIPHERTEXT-CHECK-MARKER-5f0c"
SECRET = b"Content-Type: text/plain\r\n\r\nThe secret is " + MARKER + b".\r\n"


def is_ciphertext(message: bytes) -> bool:
    """The checker's answer, from a shallow parse (as FETCH does) and a full one, which agree."""
    from transcoder.mime.ciphertext import is_ciphertext as check

    fp = io.BytesIO(message)
    answers = set()
    for entity in (parse_top_level(fp, len(message)), parse_message(fp)):
        fp.seek(7)
        answers.add(check(entity, fp))
        assert fp.tell() == 7  # the caller's position is restored
    (answer,) = answers
    assert isinstance(answer, bool)
    return answer


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and scratch files of this module."""
    return tmp_path_factory.mktemp("ciphertext")


@pytest.fixture(scope="module")
def bob(workdir: Path) -> Party:
    """An RSA-2048 recipient."""
    return make_party(workdir, "bob", rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def genuine(workdir: Path, bob: Party, pgp: PgpTestKeys) -> Genuine:
    """One genuine S/MIME enveloped message, one signed-data, one armored OpenPGP message."""
    return Genuine(
        smime_enveloped(workdir, bob, SECRET),
        smime_signed(workdir, bob, SECRET),
        gpg_armored(pgp, SECRET),
    )


# -- genuine ciphertext passes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [(), ("-stream",), ("-aes-256-gcm",), ("-aes128", "-keyid")],
    ids=["aes256-cbc", "ber-indefinite", "auth-enveloped-gcm", "aes128-keyid"],
)
def test_openssl_enveloped_messages_are_ciphertext(
    workdir: Path, bob: Party, options: tuple[str, ...]
) -> None:
    """openssl cms -encrypt output (definite or BER indefinite, CBC or GCM) is ciphertext."""
    assert is_ciphertext(smime_enveloped(workdir, bob, SECRET, *options))


def test_ec_recipient_enveloped_message_is_ciphertext(workdir: Path) -> None:
    """EnvelopedData to a P-256 certificate (a KeyAgreeRecipientInfo, [1]) is ciphertext."""
    carol = make_party(workdir, "carol", ec.generate_private_key(ec.SECP256R1()))
    assert is_ciphertext(smime_enveloped(workdir, carol, SECRET))


def test_binary_and_unlabelled_enveloped_data_is_ciphertext(workdir: Path, bob: Party) -> None:
    """DER in the binary transfer encoding, with or without smime-type, trailing CRLF allowed."""
    der = openssl_cms(workdir, SECRET, "-encrypt", "-outform", "DER", str(bob.cert_path))
    for label in (b"; smime-type=enveloped-data", b""):
        head = HEADER + b"Content-Type: application/pkcs7-mime" + label + b"\r\n"
        message = head + b"Content-Transfer-Encoding: binary\r\n\r\n" + der
        assert is_ciphertext(message) and is_ciphertext(message + b"\r\n")
        assert not is_ciphertext(message + b"\r\nx")


def test_gpg_messages_are_ciphertext(genuine: Genuine) -> None:
    """gpg's armored message as PGP/MIME (the usual preamble notice allowed), inline, base64."""
    armored = genuine.armored
    b64 = base64.encodebytes(armored).replace(b"\n", b"\r\n")
    base64_inline = HEADER + b"Content-Transfer-Encoding: base64\r\n\r\n" + b64
    assert is_ciphertext(pgp_mime(armored))
    assert is_ciphertext(pgp_mime(armored, preamble=b"\r\n \r\n", epilogue=b"\t\r\n"))
    notice = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
    assert is_ciphertext(pgp_mime(armored, preamble=notice))  # Thunderbird's, and our views'
    assert not is_ciphertext(pgp_mime(armored, preamble=notice + b"and more\r\n"))
    assert is_ciphertext(inline_pgp(armored))
    assert is_ciphertext(inline_pgp(armored, before=b"\r\n  ", after=b"\r\n\r\n"))
    assert is_ciphertext(inline_pgp(armored.rstrip(b"\r\n")))
    assert is_ciphertext(base64_inline)


def test_large_gpg_message_with_partial_lengths_is_ciphertext(pgp: PgpTestKeys) -> None:
    """A 300 kB message gpg encrypted from a pipe (partial body lengths) is ciphertext."""
    armored = gpg_armored(pgp, os.urandom(300_000), "--compress-algo", "none")
    assert b"BEGIN PGP MESSAGE" in armored
    assert is_ciphertext(inline_pgp(armored)) and is_ciphertext(pgp_mime(armored))


def symmetric(content: bytes, home: Path) -> bytes:
    """``gpg --symmetric --rfc2440``: an SKESK and a SED packet (tag 9), armored, CRLF."""
    done = subprocess.run(
        [
            *("gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode"),
            *("loopback", "--passphrase", "test", "--armor", "--symmetric", "--rfc2440"),
            *("--cipher-algo", "AES256"),
        ],
        input=content,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_symmetric_sed_message_is_ciphertext(pgp: PgpTestKeys) -> None:
    """SKESK then a Symmetrically Encrypted Data packet (tag 9): ciphertext too."""
    assert is_ciphertext(inline_pgp(symmetric(SECRET, pgp.decrypt_home)))


# -- look-alikes and damage get the view -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(look_alikes(Genuine(b"", b"", b""), b"")))
def test_crafted_look_alikes_are_not_ciphertext(genuine: Genuine, name: str) -> None:
    """Each crafted shape of issue 8 (plaintext in or beside an encrypted-looking body) is not."""
    assert not is_ciphertext(look_alikes(genuine, MARKER)[name].message)


def _replace_crc(armored: bytes) -> bytes:
    match = re.search(rb"\r\n=([A-Za-z0-9+/]{4})\r\n", armored)
    assert match, armored
    other = b"AAAA" if match.group(1) != b"AAAA" else b"AAAB"
    return armored[: match.start(1)] + other + armored[match.end(1) :]


def _drop_line(armored: bytes) -> bytes:
    lines = armored.split(b"\r\n")
    return b"\r\n".join(lines[:3] + lines[4:])


ARMOR_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "comment-header": lambda a: a.replace(b"-----\r\n\r\n", b"-----\r\nComment: hi\r\n\r\n", 1),
    "crc-mismatch": _replace_crc,
    "line-dropped": _drop_line,
    "two-messages": lambda a: a + a,
    "cut-short": lambda a: a[: len(a) // 2],
    "no-blank-line": lambda a: a.replace(b"-----\r\n\r\n", b"-----\r\n", 1),
    "end-missing": lambda a: a.replace(b"-----END PGP MESSAGE-----", b""),
    "signature-label": lambda a: a.replace(b"PGP MESSAGE", b"PGP SIGNATURE"),
}


@pytest.mark.parametrize("damage", sorted(ARMOR_DAMAGE))
def test_damaged_armor_is_not_ciphertext(genuine: Genuine, damage: str) -> None:
    """Armor headers, a wrong CRC-24, a missing line or END, two blocks: not ciphertext."""
    damaged = ARMOR_DAMAGE[damage](genuine.armored)
    assert not is_ciphertext(inline_pgp(damaged))
    assert not is_ciphertext(pgp_mime(damaged))


def test_armor_without_crc_is_ciphertext(genuine: Genuine) -> None:
    """The CRC-24 line is optional (RFC 9580 section 6.2)."""
    without = re.sub(rb"\r\n=[A-Za-z0-9+/]{4}\r\n", b"\r\n", genuine.armored)
    assert without != genuine.armored and is_ciphertext(inline_pgp(without))


def test_unencrypted_openpgp_messages_are_not_ciphertext(pgp: PgpTestKeys) -> None:
    """gpg --store (a literal packet) and gpg --sign, armored as PGP MESSAGE: not ciphertext."""
    for options in (("--store",), ("--sign", "-u", pgp.x25519.fingerprint)):
        armored = gpgkeys.gpg(pgp.decrypt_home, "--armor", *options, stdin=SECRET)
        assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
        armored = armored.replace(b"\n", b"\r\n")
        assert not is_ciphertext(inline_pgp(armored)) and not is_ciphertext(pgp_mime(armored))


PGP_MIME_DAMAGE: dict[str, tuple[bytes, bytes]] = {
    "version-2": (b"\r\nVersion: 1\r\n", b"\r\nVersion: 2\r\n"),
    "control-text": (b"Version: 1\r\n", b"Version: 1\r\nsee attachment\r\n"),
    "extra-field": (b"application/octet-stream\r\n", b"application/octet-stream\r\nX-Note: hi\r\n"),
    "no-protocol": (b' protocol="application/pgp-encrypted";', b""),
    "other-protocol": (b'"application/pgp-encrypted";', b'"application/pkcs7-mime";'),
    "data-base64": (b"octet-stream\r\n", b"octet-stream\r\nContent-Transfer-Encoding: base64\r\n"),
    "data-text-plain": (b"application/octet-stream", b"text/plain"),
    "two-content-types": (b"MIME-Version: 1.0\r\n", b"Content-Type: text/plain\r\n"),
    "parts-swapped": (b"Type: application/pgp-encrypted", b"Type: application/octet-stream"),
}


@pytest.mark.parametrize("damage", sorted(PGP_MIME_DAMAGE))
def test_damaged_pgp_mime_is_not_ciphertext(genuine: Genuine, damage: str) -> None:
    """Another version, text in the control part, a non-Content field, wrong types: refused."""
    old, new = PGP_MIME_DAMAGE[damage]
    message = pgp_mime(genuine.armored)
    assert old in message
    assert not is_ciphertext(message.replace(old, new, 1))


def test_smime_labels_must_match_the_content(genuine: Genuine) -> None:
    """smime-type naming another type than the content's (or signed-data) is not ciphertext."""
    for label in (b"authEnveloped-data", b"signed-data", b"certs-only"):
        relabelled = genuine.smime.replace(b"smime-type=enveloped-data", b"smime-type=" + label)
        assert relabelled != genuine.smime and not is_ciphertext(relabelled)


def test_smime_content_beyond_one_enveloped_data_is_not_ciphertext(
    workdir: Path, bob: Party
) -> None:
    """Two ContentInfos, a truncated one, or damaged base64: not ciphertext."""
    der = openssl_cms(workdir, SECRET, "-encrypt", "-outform", "DER", str(bob.cert_path))
    head = HEADER + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
    b64 = head + b"Content-Transfer-Encoding: base64\r\n\r\n"
    for body in (der + der, der[:-1], der + b"\0"):
        assert not is_ciphertext(b64 + base64.encodebytes(body))
    encoded = base64.encodebytes(der)
    assert is_ciphertext(b64 + encoded)
    assert not is_ciphertext(b64 + encoded.replace(b"\n", b"\n!", 1))
    assert not is_ciphertext(b64 + encoded[:-3] + b"\n")


# -- the layers below --------------------------------------------------------------------------


def crc24_reference(data: bytes) -> int:
    """RFC 9580 section 6.1's bit-by-bit CRC-24, transcribed."""
    crc = 0xB704CE
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_crc24_matches_the_rfc_algorithm(pieces: list[bytes]) -> None:
    """crc24 over pieces equals the RFC's bit loop over their concatenation."""
    from transcoder.mime.pgp_message import CRC24_INIT, crc24

    crc = CRC24_INIT
    for piece in pieces:
        crc = crc24(piece, crc)
    assert crc == crc24_reference(b"".join(pieces))
    assert crc24(b"123456789") == 0x21CF02  # the CRC-24/OPENPGP check value


@given(st.binary(max_size=200), st.lists(st.integers(0, 400), max_size=6))
def test_base64_decoder_agrees_with_the_stdlib_however_cut(data: bytes, cuts: list[int]) -> None:
    """Strict streaming base64 of wrapped text decodes like base64.b64decode, cut anywhere."""
    from transcoder.mime.base64stream import Base64Decoder

    text = base64.encodebytes(data).replace(b"\n", b"\r\n")
    decoder = Base64Decoder()
    out, start = b"", 0
    for cut in [*sorted(c for c in cuts if c <= len(text)), len(text)]:
        out += decoder.feed(text[start:cut])
        start = cut
    assert decoder.finish() and out == data


@pytest.mark.parametrize(
    "text", [b"QUJD!", b"QU=JD", b"QUJ", b"QQ==QQ==", b"QUJD\x00", b"QQ=", b"Q===", b"=QUJ"]
)
def test_base64_decoder_is_strict(text: bytes) -> None:
    """Characters outside the alphabet, padding before the end, a cut quantum: invalid."""
    from transcoder.mime.base64stream import Base64Decoder

    decoder = Base64Decoder()
    decoder.feed(text)
    assert not decoder.finish()


def packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a one- or two-octet length."""
    length = len(body)
    if length < 192:
        return bytes((0xC0 | tag, length)) + body
    length -= 192
    return bytes((0xC0 | tag, 192 + (length >> 8), length & 0xFF)) + body


PKESK = packet(1, b"\x03" + bytes(20))
SEIPD = packet(18, b"\x01" + bytes(40))


@pytest.mark.parametrize(
    ("octets", "valid"),
    [
        (PKESK + SEIPD, True),
        (PKESK + PKESK + packet(3, b"\x04" + bytes(12)) + SEIPD, True),
        (SEIPD, True),
        (bytes((0x84, 21)) + b"\x03" + bytes(20) + bytes((0xA7,)) + bytes(50), True),  # old, SED
        (PKESK + bytes((0xC9, 0xE9)) + bytes(512) + bytes((5,)) + bytes(5), True),  # partial
        (PKESK + bytes((0xC9, 0xE1)) + bytes(2) + bytes((5,)) + bytes(5), False),  # under 512
        (PKESK + bytes((0xD2, 0xE9)) + b"\x01" + bytes(511), False),  # partial, no last chunk
        (SEIPD + PKESK, False),  # a packet after the data
        (PKESK, False),  # no data packet
        (packet(11, b"b\x00" + bytes(4) + b"text"), False),  # literal data: plaintext
        (packet(8, b"\x00" + b"text"), False),  # compressed data
        (PKESK + packet(18, b"\x03" + bytes(8)), False),  # unknown SEIPD version
        (packet(1, b"\x07" + bytes(20)) + SEIPD, False),  # unknown PKESK version
        (PKESK + packet(18, b""), False),  # empty data packet
        (PKESK + SEIPD[:-1], False),  # truncated
        (b"\x00" + SEIPD, False),  # not a packet header
        (b"", False),
    ],
)
def test_packet_walker(octets: bytes, valid: bool) -> None:
    """ESK packets then one encrypted data packet, nothing else (RFC 9580 section 10.3)."""
    from transcoder.mime.pgp_message import PacketWalker

    for step in (1, 3, len(octets) or 1):
        walker = PacketWalker()
        for i in range(0, len(octets), step):
            walker.feed(octets[i : i + step])
        assert walker.finish() is valid


def tlv(tag: int, content: bytes) -> bytes:
    """A definite-length DER value."""
    length = len(content)
    if length < 128:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


@pytest.mark.parametrize(
    ("octets", "complete"),
    [
        (tlv(0x30, tlv(0x02, b"\x00") + tlv(0x04, bytes(300))), True),
        (b"\x30\x80" + tlv(0x02, b"\x00") + b"\x00\x00", True),  # indefinite length
        (b"\x30\x03" + tlv(0x04, b"\x00\x00"), False),  # child longer than its parent
        (b"\x30\x80" + tlv(0x02, b"\x00"), False),  # no end-of-contents
        (b"\x04\x80\x00\x00", False),  # indefinite primitive
        (tlv(0x30, b"\x00\x00"), False),  # end-of-contents in a definite value
        (b"\x30\x80" * 40 + b"\x00\x00" * 40, False),  # nested too deeply
        (b"\x30\x89" + bytes(9), False),  # length of nine octets
        (tlv(0x30, b""), True),
    ],
)
def test_ber_outline(octets: bytes, complete: bool) -> None:
    """The BER walker accepts one well-formed value, definite or indefinite, and nothing broken."""
    from transcoder.mime.cms_message import BerOutline

    walker = BerOutline()
    for octet in octets:
        walker.feed(bytes((octet,)))
    assert walker.finish() is complete


# -- memory and mutations ----------------------------------------------------------------------


def _peak_while(check: Callable[[], bool]) -> tuple[bool, int]:
    tracemalloc.start()
    try:
        answer = check()
        return answer, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fp:
        yield from iter(lambda: fp.read(1 << 20), b"")


def test_large_messages_are_checked_in_bounded_memory(
    workdir: Path, bob: Party, pgp: PgpTestKeys
) -> None:
    """16 MB S/MIME and PGP/MIME messages are checked with under 4 MiB of Python memory."""
    plain = workdir / "large.txt"
    plain.write_bytes(b"Content-Type: application/octet-stream\r\n\r\n" + os.urandom(16 << 20))
    smime = workdir / "large-smime.eml"
    subprocess.run(
        [
            *("openssl", "cms", "-encrypt", "-aes256", "-binary", "-in", str(plain)),
            *("-out", str(smime), str(bob.cert_path)),
        ],
        check=True,
        timeout=300,
    )
    armored = workdir / "large.asc"
    gpgkeys.gpg(
        pgp.decrypt_home,
        *("--armor", "--trust-model", "always", "--compress-algo", "none", "--encrypt"),
        *("-r", pgp.x25519.fingerprint, "--output", str(armored), str(plain)),
    )
    pgp_message = workdir / "large-pgp.eml"
    with pgp_message.open("wb") as out:
        out.write(pgp_mime(b"").split(b"Content-Type: application/octet-stream\r\n\r\n")[0])
        out.write(b"Content-Type: application/octet-stream\r\n\r\n")
        for chunk in _chunks(armored):
            out.write(chunk.replace(b"\n", b"\r\n"))
        out.write(b"\r\n--enc--\r\n")
    from transcoder.mime.ciphertext import is_ciphertext as check

    for path in (smime, pgp_message):
        with path.open("rb") as fp:
            entity = parse_top_level(fp)
            answer, peak = _peak_while(lambda fp=fp, entity=entity: check(entity, fp))
        assert answer, path
        assert peak < 4 << 20, (path, peak)
    assert smime.stat().st_size > 16 << 20 and pgp_message.stat().st_size > 16 << 20


def _mutate(data: bytes, position: int, kind: int, octet: int) -> bytes:
    position %= len(data) + 1
    if kind == 0:  # replace
        return data[:position] + bytes((octet,)) + data[position + 1 :]
    if kind == 1:  # insert
        return data[:position] + bytes((octet,)) + data[position:]
    if kind == 2:  # delete
        return data[:position] + data[position + 1 :]
    return data[:position]  # truncate


def _well_formed_smime(message: bytes) -> bool:
    """An independent oracle: strict base64 and asn1crypto parse the body as an enveloping."""
    text = body_of(message).translate(None, b" \t\r\n")
    try:
        info = cms.ContentInfo.load(base64.b64decode(text, validate=True), strict=True)
        return info["content_type"].native in ("enveloped_data", "authenticated_enveloped_data")
    except Exception:
        return False


@given(st.data())
def test_mutated_ciphertext_never_raises_and_smime_stays_well_formed(
    genuine: Genuine, data: st.DataObject
) -> None:
    """Random damage to genuine messages: always a bool; S/MIME passes only if still well formed."""
    samples = [genuine.smime, pgp_mime(genuine.armored), inline_pgp(genuine.armored)]
    index = data.draw(st.integers(0, len(samples) - 1))
    message = samples[index]
    for _ in range(data.draw(st.integers(1, 4))):
        message = _mutate(
            message,
            data.draw(st.integers(len(HEADER), len(message))),
            data.draw(st.integers(0, 3)),
            data.draw(st.integers(0, 255)),
        )
    answer = is_ciphertext(message)
    if answer and index == 0:
        assert _well_formed_smime(message)


@given(st.data())
def test_a_plaintext_line_anywhere_in_the_body_is_never_ciphertext(
    genuine: Genuine, data: st.DataObject
) -> None:
    """A line of text inserted at any line start of a genuine message's body: not ciphertext."""
    samples = [genuine.smime, pgp_mime(genuine.armored), inline_pgp(genuine.armored)]
    message = data.draw(st.sampled_from(samples))
    body_start = message.index(b"\r\n\r\n") + 4
    starts = [body_start] + [m.end() for m in re.finditer(b"\n", message) if m.end() > body_start]
    at = data.draw(st.sampled_from(starts))
    leaked = message[:at] + b"Plain text: " + MARKER + b"!\r\n" + message[at:]
    assert not is_ciphertext(leaked)
