"""The sans-IO OpenPGP screen: armor, packet framing, secret material, one primary key."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.keyfactory import PgpKeys
from transcoder.errors import ClientError
from transcoder.keys.errors import KeyInvalid
from transcoder.keys.openpgp_packets import check_public_key_data, dearmor, packet_tags


def _armor(binary: bytes, label: str = "PUBLIC KEY BLOCK", headers: str = "") -> bytes:
    body = base64.b64encode(binary).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = f"-----BEGIN PGP {label}-----\n{headers}\n" + "\n".join(lines)
    return (text + f"\n=AAAA\n-----END PGP {label}-----\n").encode()


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


def test_armor_headers_and_checksum_skipped(pgp_keys: PgpKeys) -> None:
    """Armor headers and the CRC line are skipped; the payload is the binary key."""
    armored = _armor(pgp_keys.alice_25519, headers="Comment: test\nVersion: x\n")
    assert dearmor(armored) == pgp_keys.alice_25519


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
