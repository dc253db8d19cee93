"""Signed and encrypted messages from the native encoder, verified by gpg 2.2 and Sequoia's sq.

The server's signing subkey is read from its armored secret key as the
server stores it; the signed message (one-pass signature, literal data,
signature, inside the SEIPD: RFC 3156 section 6.2) decrypts and verifies
with ``gpg --decrypt`` (GOODSIG and VALIDSIG naming the signing subkey and
the server's primary key) and with ``sq decrypt --signer-cert``; an altered
octet of the signed data makes gpg report BADSIG; the octets are a function
of the draws, the key and the creation time, and their size is known in
advance.
"""

from __future__ import annotations

import io
import itertools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openpgp.gpgkeys import kill_agents
from tests.openpgp.native_keys import NativeKeys, native
from tests.openpgp.signing_keys import ServerSigningKeys, cleanup, server_signing_keys
from tests.openpgp.test_native_encoder import derived
from transcoder.keys.server_keys_gpg import OpenPgpServerKey
from transcoder.openpgp.encoder import armored_message_lines, armored_message_size, encrypt_armored
from transcoder.openpgp.errors import OpenPgpError
from transcoder.openpgp.recipients import Recipient, recipient_for_key
from transcoder.openpgp.sign import (
    LiteralSigner,
    SigningKey,
    UnsupportedSigningKey,
    signing_key_from_secret,
)

__all__ = ["native"]

MESSAGE = b"From: a@example.org\r\nSubject: signed\r\n\r\n" + b"line of the body\r\n" * 500


@pytest.fixture(scope="module")
def server(native: NativeKeys) -> Iterator[ServerSigningKeys]:
    """Server keys with Ed25519 and RSA signing subkeys, and a verifier home."""
    yield server_signing_keys(native)
    cleanup()


def signing_key(made: OpenPgpServerKey) -> SigningKey:
    """The native signer's key, read from the stored secret key by the index's subkey."""
    return signing_key_from_secret(made.secret, made.entry.subkeys[1])


def signed(
    data: bytes,
    recipient: Recipient,
    key: SigningKey,
    created: int | None = None,
    seed: bytes = b"m",
) -> bytes:
    """The signed, encrypted, armored message; its size checked against the prediction."""
    out = io.BytesIO()
    written = encrypt_armored(
        io.BytesIO(data),
        len(data),
        out,
        (recipient,),
        derived(message=seed),
        LiteralSigner(key, created),
    )
    assert written == len(out.getvalue()) == armored_message_size(len(data), (recipient,), key)
    assert out.getvalue().count(b"\n") == armored_message_lines(len(data), (recipient,), key)
    return out.getvalue()


SIGNERS = ["ed25519", "rsa", "nistp256", "nistp384"]


@pytest.mark.parametrize("signer", SIGNERS)
@pytest.mark.parametrize("key_type", ["cv25519", "rsa2048"])
def test_gpg_reports_a_good_signature_from_the_server_signing_subkey(
    native: NativeKeys, server: ServerSigningKeys, signer: str, key_type: str
) -> None:
    """gpg decrypts to the data; GOODSIG/VALIDSIG name the server key's signing subkey."""
    made = server.keys[signer]
    armored = signed(MESSAGE, recipient_for_key(native.keys[key_type]), signing_key(made))
    result = server.gpg_verify(armored)
    assert result.returncode == 0, result.status
    assert result.plaintext == MESSAGE
    assert len(result.keyword("GOODSIG")) == 1
    (validsig,) = result.keyword("VALIDSIG")
    assert validsig[0].lower() == made.entry.subkeys[1]
    assert validsig[-1].lower() == made.entry.fingerprint
    assert not result.keyword("BADSIG") and not result.keyword("ERRSIG")


@pytest.mark.parametrize("signer", SIGNERS)
def test_sq_verifies_with_the_published_server_certificate(
    native: NativeKeys, server: ServerSigningKeys, signer: str
) -> None:
    """sq decrypt --signer-cert (the server's public key) succeeds and gives the data."""
    armored = signed(
        MESSAGE, recipient_for_key(native.keys["cv25519"]), signing_key(server.keys[signer])
    )
    result = server.sq_verify(armored, native.secret_files["cv25519"], signer)
    assert result.returncode == 0, result.status
    assert result.plaintext == MESSAGE


def test_sq_refuses_a_signature_by_another_key(
    native: NativeKeys, server: ServerSigningKeys
) -> None:
    """Signed by the RSA server key, checked against the Ed25519 one: sq fails, no plaintext."""
    armored = signed(
        MESSAGE, recipient_for_key(native.keys["cv25519"]), signing_key(server.keys["rsa"])
    )
    result = server.sq_verify(armored, native.secret_files["cv25519"], "ed25519")
    assert result.returncode != 0
    assert MESSAGE not in result.plaintext


def _unwrapped(server: ServerSigningKeys, armored: bytes) -> bytes:
    """The signed message inside the encryption (``gpg --unwrap``), binary."""
    result = server.gpg_verify(armored, "--unwrap")
    assert result.returncode == 0, result.status
    return result.plaintext


def test_a_flipped_octet_of_the_signed_data_is_a_bad_signature(
    native: NativeKeys, server: ServerSigningKeys
) -> None:
    """The signed message altered in its literal data: gpg reports BADSIG, not GOODSIG."""
    armored = signed(
        MESSAGE, recipient_for_key(native.keys["cv25519"]), signing_key(server.keys["ed25519"])
    )
    inner = _unwrapped(server, armored)
    assert server.gpg_verify(inner).keyword("GOODSIG")
    at = inner.index(b"line of the body")
    tampered = inner[:at] + b"L" + inner[at + 1 :]
    result = server.gpg_verify(tampered)
    assert result.returncode != 0
    assert result.keyword("BADSIG") and not result.keyword("GOODSIG")


def test_a_flipped_octet_of_the_view_gives_nothing(
    native: NativeKeys, server: ServerSigningKeys
) -> None:
    """One base64 character of the armored message changed: gpg fails and no GOODSIG."""
    armored = signed(
        MESSAGE, recipient_for_key(native.keys["cv25519"]), signing_key(server.keys["ed25519"])
    )
    lines = armored.split(b"\r\n")
    middle = len(lines) // 2
    line = lines[middle]
    lines[middle] = (b"A" if line[:1] != b"A" else b"B") + line[1:]
    result = server.gpg_verify(b"\r\n".join(lines))
    assert result.returncode != 0
    assert not result.keyword("GOODSIG")


def test_signature_packets_are_as_announced(native: NativeKeys, server: ServerSigningKeys) -> None:
    """gpg --list-packets: one-pass signature, literal data, v4 binary signature with SHA-256,
    the creation time given, issuer fingerprint and key ID in the hashed area."""
    made = server.keys["ed25519"]
    key = signing_key(made)
    created = key.created + 1000
    armored = signed(MESSAGE, recipient_for_key(native.keys["cv25519"]), key, created)
    listing = server.packets(armored)
    assert re.search(
        r":onepass_sig packet: keyid [0-9A-F]{16}\s+"
        r"version 3, sigclass 0x00, digest 8, pubkey 22, last=1",
        listing,
    )
    assert re.search(r"sigclass 0x00", listing) and "version 4" in listing
    assert f"created {created}" in listing
    assert (
        "hashed subpkt 33 len 21 (issuer fpr v4 " + made.entry.subkeys[1].upper() + ")" in listing
    )
    assert (
        "hashed subpkt 16 len 8 (issuer key ID " + made.entry.subkeys[1][-16:].upper() + ")"
        in listing
    )
    assert "compressed packet" not in listing


@pytest.mark.parametrize("signer", SIGNERS)
def test_same_inputs_same_octets(
    native: NativeKeys, server: ServerSigningKeys, signer: str
) -> None:
    """The same draws, key and time give the same octets (ECDSA too: RFC 6979 nonces);
    another message other octets."""
    key = signing_key(server.keys[signer])
    recipient = recipient_for_key(native.keys["cv25519"])
    first = signed(MESSAGE, recipient, key)
    assert signed(MESSAGE, recipient, key) == first
    assert signed(MESSAGE, recipient, signing_key(server.keys[signer])) == first
    assert signed(MESSAGE + b"x", recipient, key) != first


def test_p384_signs_with_sha384(native: NativeKeys, server: ServerSigningKeys) -> None:
    """A P-384 signing key signs with SHA-384 (digest 9), announced in the one-pass packet."""
    key = signing_key(server.keys["nistp384"])
    listing = server.packets(signed(MESSAGE, recipient_for_key(native.keys["cv25519"]), key))
    assert re.search(r"version 3, sigclass 0x00, digest 9, pubkey 19, last=1", listing)
    assert "digest algo 9" in listing


def test_sizes_hold_across_many_signatures(native: NativeKeys, server: ServerSigningKeys) -> None:
    """Every size is the predicted one over 400 messages and over messages that needed a
    second signature for full-length MPIs (searched for: about one in 128), and a message
    that needed one still verifies."""
    key = signing_key(server.keys["ed25519"])
    recipient = recipient_for_key(native.keys["cv25519"])

    def needs_retry(data: bytes) -> bool:
        signer = LiteralSigner(key)
        signer.update(data)
        packet = signer.signature_packet()
        # header (2), version, type, algorithms (3), area length (2), subpacket 2's head (2)
        return int.from_bytes(packet[10:14], "big") != key.created

    # The key is generated per run, so which messages need a retry varies: search until
    # three are found (missing them in 20,000 messages has odds of about e**-150).
    candidates = (b"message %d\r\n" % index for index in range(20_000))
    retried = list(itertools.islice(filter(needs_retry, candidates), 3))
    assert len(retried) == 3
    for data in [b"message %d\r\n" % index for index in range(400)] + retried:
        signed(data, recipient, key, seed=data)
    result = server.gpg_verify(signed(retried[0], recipient, key, seed=retried[0]))
    assert result.returncode == 0 and result.keyword("GOODSIG"), result.status


def test_the_encryption_subkey_is_not_a_signing_key(server: ServerSigningKeys) -> None:
    """Asking for the server's encryption subkey as a signing key is refused."""
    made = server.keys["ed25519"]
    with pytest.raises(UnsupportedSigningKey):
        signing_key_from_secret(made.secret, made.entry.subkeys[0])


def test_a_public_key_or_a_protected_key_is_refused(
    server: ServerSigningKeys, tmp_path: Path
) -> None:
    """No secret packet (the public key) or a secret under a passphrase: refused, not guessed."""
    made = server.keys["ed25519"]
    with pytest.raises(UnsupportedSigningKey):
        signing_key_from_secret(made.entry.public, made.entry.subkeys[1])
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    try:
        protect = ("--pinentry-mode", "loopback", "--passphrase", "pw")
        run = ("gpg", "--homedir", str(home), "--batch", "--no-tty", *protect)
        subprocess.run(
            [*run, "--quick-gen-key", "p <p@example.org>", "ed25519", "cert", "never"],
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [*run, "--with-colons", "--list-keys"], check=True, capture_output=True
        ).stdout.decode()
        primary = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
        )
        subprocess.run(
            [*run, "--quick-add-key", primary, "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [*run, "--with-colons", "--list-keys"], check=True, capture_output=True
        ).stdout.decode()
        subkey = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")][1]
        secret = subprocess.run(
            [*run, "--armor", "--export-secret-keys", primary], check=True, capture_output=True
        ).stdout
    finally:
        kill_agents(home)
    with pytest.raises(UnsupportedSigningKey, match="passphrase"):
        signing_key_from_secret(secret, subkey)


def test_creation_time_out_of_range_is_refused(server: ServerSigningKeys) -> None:
    """A creation time that does not fit four octets is refused before anything is signed."""
    with pytest.raises(OpenPgpError):
        LiteralSigner(signing_key(server.keys["ed25519"]), 2**32)
