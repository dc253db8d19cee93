"""The sans-IO OpenPGP screen: armor, packet framing, secret material, one primary key."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.keyfactory import PgpKeys
from transcoder.errors import ClientError
from transcoder.keys.errors import KeyInvalid
from transcoder.keys.openpgp_packets import (
    check_public_key_data,
    crc24,
    dearmor,
    key_fingerprint,
    packet_tags,
    read_packets,
)


def _armor(
    binary: bytes, label: str = "PUBLIC KEY BLOCK", headers: str = "", crc: int | None = None
) -> bytes:
    body = base64.b64encode(binary).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = f"-----BEGIN PGP {label}-----\n{headers}\n" + "\n".join(lines)
    checksum = base64.b64encode((crc24(binary) if crc is None else crc).to_bytes(3, "big"))
    return (text + f"\n={checksum.decode()}\n-----END PGP {label}-----\n").encode()


def test_new_format_lengths() -> None:
    """One-, two- and five-octet new-format lengths frame packets correctly (RFC 9580 4.2.1)."""
    one = bytes([0xC0 | 13, 3]) + b"abc"
    two = bytes([0xC0 | 2, 192, 8]) + b"x" * 200
    five = bytes([0xC0 | 14, 255, 0, 0, 0, 2]) + b"yz"
    assert packet_tags(one + two + five) == [13, 2, 14]


def test_legacy_format_lengths() -> None:
    """One-, two- and four-octet legacy lengths frame packets correctly (RFC 9580 4.2.2)."""
    one = bytes([0x80 | (6 << 2) | 0, 2]) + b"ab"
    two = bytes([0x80 | (13 << 2) | 1, 0, 1]) + b"c"
    four = bytes([0x80 | (2 << 2) | 2, 0, 0, 0, 1]) + b"d"
    assert packet_tags(one + two + four) == [6, 13, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([0xC0 | 6, 10]) + b"short", "truncated"),
        (bytes([0xC0 | 6, 192]), "truncated"),
        (bytes([0xC0 | 11, 224]) + b"x", "partial-length"),
        (bytes([0x80 | (11 << 2) | 3]) + b"xyz", "indeterminate-length"),
        (b"\x30\x82", "not OpenPGP data"),
    ],
)
def test_broken_framing_refused(data: bytes, message: str) -> None:
    """Truncated packets, data-packet lengths and non-OpenPGP octets are refused."""
    with pytest.raises(KeyInvalid, match=message):
        packet_tags(data)


def test_armor_headers_skipped_and_checksum_checked(pgp_keys: PgpKeys) -> None:
    """Armor headers are skipped and the CRC-24 line checked; the payload is the binary key."""
    armored = _armor(pgp_keys.alice_25519, headers="Comment: test\nVersion: x\n")
    assert dearmor(armored) == pgp_keys.alice_25519
    assert dearmor(pgp_keys.alice_rsa_armored) == pgp_keys.alice_rsa  # gpg's own checksum


def test_armor_without_checksum_accepted(pgp_keys: PgpKeys) -> None:
    """The CRC-24 line is optional (RFC 9580 section 6.1)."""
    armored = b"".join(x for x in _armor(pgp_keys.alice_25519).splitlines(True) if x[:1] != b"=")
    assert dearmor(armored) == pgp_keys.alice_25519


def test_armor_checksum_mismatch_refused(pgp_keys: PgpKeys) -> None:
    """A CRC-24 that does not match the payload is refused: the armor was damaged."""
    with pytest.raises(KeyInvalid, match="checksum mismatch"):
        dearmor(_armor(pgp_keys.alice_25519, crc=crc24(pgp_keys.alice_25519) ^ 1))


@pytest.mark.parametrize(
    ("before", "after"),
    [(b"Here is my key:\n", b""), (b"", b"\n-- \nAlice\n"), (b"\x99\x00\x01\n", b"")],
)
def test_text_around_armor_refused(pgp_keys: PgpKeys, before: bytes, after: bytes) -> None:
    """Anything but whitespace around the armor is refused: gpg might read what we skip."""
    with pytest.raises(KeyInvalid, match="outside the ASCII armor"):
        dearmor(before + pgp_keys.alice_rsa_armored + after)
    assert dearmor(b" \r\n" + pgp_keys.alice_rsa_armored + b"\n\n") == pgp_keys.alice_rsa


def test_armored_key_followed_by_binary_key_refused(pgp_keys: PgpKeys) -> None:
    """A binary key appended after the armor is not silently ignored."""
    with pytest.raises(KeyInvalid, match="outside the ASCII armor"):
        check_public_key_data(pgp_keys.alice_rsa_armored + pgp_keys.bob)


def test_fingerprints_computed_from_the_packets_sent(pgp_keys: PgpKeys) -> None:
    """The screen's fingerprints of a real key are gpg's (RFC 9580 5.5.4, version 4)."""
    sent = check_public_key_data(pgp_keys.alice_rsa_armored)
    assert sent.fingerprint == pgp_keys.alice_rsa_fpr
    assert sent.binary == pgp_keys.alice_rsa
    assert sent.user_ids == ("Alice <alice@example.org>",)
    (subkey,) = sent.subkeys
    assert subkey.can_encrypt and subkey.algorithm == 1
    assert subkey.fingerprint in _gpg_fingerprints(pgp_keys.alice_rsa)


def _gpg_fingerprints(binary: bytes) -> str:
    """gpg's colon listing of ``binary`` (show-only import), for its fpr records."""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [*("gpg", "--homedir", home, "--batch", "--with-colons"), "--show-keys"],
            input=binary,
            capture_output=True,
            check=True,
        )
    return done.stdout.decode()


@pytest.mark.parametrize(("version", "digest"), [(5, 0x9A), (6, 0x9B)])
def test_version_5_and_6_fingerprints(version: int, digest: int) -> None:
    """v5/v6 fingerprints are SHA-256 over a four-octet-length prefix (RFC 9580 5.5.4)."""
    body = bytes([version]) + b"\x00" * 20
    prefix = bytes([digest]) + len(body).to_bytes(4, "big")
    assert key_fingerprint(body) == hashlib.sha256(prefix + body).hexdigest().upper()


@pytest.mark.parametrize("version", [2, 3, 7])
def test_other_key_versions_refused(version: int) -> None:
    """v3 keys (MD5 fingerprints, RFC 9580 5.5.2) and unknown versions are refused."""
    key = bytes([0xC0 | 6, 7, version]) + b"\x00" * 6
    with pytest.raises(KeyInvalid, match=f"version {version} is not accepted"):
        check_public_key_data(key)


def test_read_packets_returns_bodies(pgp_keys: PgpKeys) -> None:
    """Packets come back with their tags and bodies, headers stripped."""
    packets = read_packets(pgp_keys.alice_25519)
    assert [p.tag for p in packets] == packet_tags(pgp_keys.alice_25519)
    assert packets[1].body == b"Alice <alice@example.org>"


def test_real_keys_pass_the_screen(pgp_keys: PgpKeys) -> None:
    """gpg's binary and armored exports of a public key pass."""
    check_public_key_data(pgp_keys.alice_rsa)
    check_public_key_data(pgp_keys.alice_rsa_armored)


def test_binary_secret_key_refused(pgp_keys: PgpKeys) -> None:
    """A binary secret key export is refused by packet type, before gpg sees it."""
    assert packet_tags(pgp_keys.alice_25519_secret)[0] == 5
    with pytest.raises(KeyInvalid, match="secret key material"):
        check_public_key_data(pgp_keys.alice_25519_secret)


def test_secret_key_in_public_armor_refused(pgp_keys: PgpKeys) -> None:
    """Secret packets relabelled as a PUBLIC KEY BLOCK are still refused."""
    with pytest.raises(KeyInvalid, match="secret key material"):
        check_public_key_data(_armor(pgp_keys.alice_25519_secret))


def test_public_key_followed_by_secret_subkey_refused(pgp_keys: PgpKeys) -> None:
    """A secret subkey packet appended to a public key is refused."""
    secret_subkey = bytes([0xC0 | 7, 1]) + b"\x04"
    with pytest.raises(KeyInvalid, match="secret key material"):
        check_public_key_data(pgp_keys.alice_25519 + secret_subkey)


def test_private_armor_label_refused() -> None:
    """An armored PRIVATE KEY BLOCK is refused on its label alone."""
    with pytest.raises(KeyInvalid, match="secret key material"):
        check_public_key_data(_armor(b"\x00", "PRIVATE KEY BLOCK"))


def test_message_armor_refused() -> None:
    """An armored PGP MESSAGE is not a key."""
    with pytest.raises(KeyInvalid, match="PGP MESSAGE is not a public key"):
        check_public_key_data(_armor(b"\x00", "MESSAGE"))


def test_armor_without_end_refused(pgp_keys: PgpKeys) -> None:
    """Armor cut before its END line is refused."""
    with pytest.raises(KeyInvalid, match="END line"):
        check_public_key_data(pgp_keys.alice_rsa_armored[:-40])


def test_damaged_armor_refused() -> None:
    """Non-base64 text inside the armor is refused."""
    bad = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n@@@@\n-----END PGP PUBLIC KEY BLOCK-----\n"
    with pytest.raises(KeyInvalid, match="damaged ASCII armor"):
        check_public_key_data(bad)


def test_two_primary_keys_refused(pgp_keys: PgpKeys) -> None:
    """Two transferable public keys in one input are refused."""
    with pytest.raises(KeyInvalid, match="2 primary keys"):
        check_public_key_data(pgp_keys.alice_rsa + pgp_keys.bob)


def test_foreign_packet_refused(pgp_keys: PgpKeys) -> None:
    """A literal-data packet inside key data is refused."""
    literal = bytes([0xC0 | 11, 1]) + b"x"
    with pytest.raises(KeyInvalid, match="type 11 does not belong"):
        check_public_key_data(pgp_keys.alice_25519 + literal)


def test_key_must_start_with_public_key_packet() -> None:
    """Data starting with a user ID packet holds no public key."""
    with pytest.raises(KeyInvalid, match="no OpenPGP public key found"):
        check_public_key_data(bytes([0xC0 | 13, 1]) + b"x")


def test_empty_refused() -> None:
    """Empty input is refused."""
    with pytest.raises(KeyInvalid, match="empty"):
        check_public_key_data(b"  \n")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1024))
def test_arbitrary_bytes_only_ever_give_client_errors(data: bytes) -> None:
    """Whatever the bytes, the screen passes them or raises a ClientError."""
    with contextlib.suppress(ClientError):
        check_public_key_data(data)
