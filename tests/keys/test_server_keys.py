"""The server's key pairs (issue 16), sans-IO: certificates fit for exactly one role, the
index's rules (rotation retires and keeps, retire, history), and XKEY SERVER's syntax."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.keys.certs import make_cert
from transcoder.client.syntax import parse_server_keys
from transcoder.errors import BadCommand
from transcoder.imap.xkey_syntax import ServerKeys, parse_arguments, server_key_response
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys import (
    ServerKeyInvalid,
    check_smime_pair,
    generate_smime,
    smime_server_key,
)
from transcoder.keys.server_keys_files import ServerKeyFiles

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("algorithm", [ec.SECP256R1(), None])
@pytest.mark.parametrize("usage", list(KeyUsage))
def test_generated_certificates_pass_their_own_check(
    usage: KeyUsage, algorithm: ec.EllipticCurve | None
) -> None:
    """A generated certificate has the one keyUsage bit of its role (keyEncipherment for
    RSA, keyAgreement for EC, digitalSignature for signing) and fails the other role."""
    key = (
        ec.generate_private_key(algorithm)
        if algorithm
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    cert = generate_smime(usage, NOW, key)
    check_smime_pair(cert, key, usage, NOW)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    bits = {
        "sign": ku.digital_signature,
        "encipher": ku.key_encipherment,
        "agree": ku.key_agreement,
    }
    wanted = "sign" if usage is KeyUsage.SIGN else ("agree" if algorithm else "encipher")
    assert [b for b, on in bits.items() if on] == [wanted]
    other = KeyUsage.SIGN if usage is KeyUsage.ENCRYPT else KeyUsage.ENCRYPT
    with pytest.raises(ServerKeyInvalid):
        check_smime_pair(cert, key, other, NOW)


def test_check_refuses_a_foreign_key_an_expired_or_a_dual_use_certificate() -> None:
    """Another key, an expired certificate and a certificate with digitalSignature and
    keyAgreement together are refused for encryption."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = generate_smime(KeyUsage.ENCRYPT, NOW, key)
    with pytest.raises(ServerKeyInvalid, match="does not belong"):
        check_smime_pair(cert, ec.generate_private_key(ec.SECP256R1()), KeyUsage.ENCRYPT, NOW)
    with pytest.raises(ServerKeyInvalid, match="expired"):
        check_smime_pair(cert, key, KeyUsage.ENCRYPT, NOW + timedelta(days=5000))
    both = x509.KeyUsage(True, False, False, False, True, False, False, False, False)
    dual = make_cert(key, not_before=NOW - timedelta(days=1), usage=both)
    with pytest.raises(ServerKeyInvalid, match="nothing else"):
        check_smime_pair(dual, key, KeyUsage.ENCRYPT, NOW)


def test_rotation_retires_and_keeps_the_old_keys(tmp_path: Path) -> None:
    """Rotating S/MIME twice leaves one current key per role, the four older ones retired
    with the rotation's time and still offered for decryption, newest first."""
    files = ServerKeyFiles(tmp_path / "server-keys", gpg_binary="no-such-gpg")
    first = files.ensure(NOW)
    assert [k.format for k in first] == [KeyFormat.SMIME, KeyFormat.SMIME]  # no gpg: no OpenPGP
    later = NOW + timedelta(days=1)
    files.rotate(KeyFormat.SMIME, later)
    files.rotate(KeyFormat.SMIME, later + timedelta(days=1), algorithm="rsa")
    history = files.history()
    assert len(history) == 6
    assert [k.retired for k in history[:2]] == [later, later]
    current = files.current()
    assert [(k.usages, k.algorithm) for k in current] == [
        (frozenset({KeyUsage.ENCRYPT}), "rsa3072"),
        (frozenset({KeyUsage.SIGN}), "rsa3072"),
    ]
    decrypting = files.decryption_keys(KeyFormat.SMIME)
    assert [k.fingerprint for k in decrypting] == [
        history[4].fingerprint,
        history[2].fingerprint,
        history[0].fingerprint,
    ]
    assert files.current_for(KeyFormat.SMIME, KeyUsage.SIGN) == current[1]
    assert all((tmp_path / "server-keys" / f"{k.fingerprint}.key").exists() for k in history)


def test_retire_leaves_no_current_key_and_ensure_replaces_it(tmp_path: Path) -> None:
    """A retired signing key is never current again; the next ensure makes a new one."""
    files = ServerKeyFiles(tmp_path / "sk", gpg_binary="no-such-gpg")
    files.ensure(NOW)
    signing = files.current_for(KeyFormat.SMIME, KeyUsage.SIGN)
    assert signing is not None
    files.retire(signing.fingerprint.upper(), NOW)
    assert files.current_for(KeyFormat.SMIME, KeyUsage.SIGN) is None
    (made,) = files.ensure(NOW)
    assert made.usages == {KeyUsage.SIGN} and made.fingerprint != signing.fingerprint
    with pytest.raises(ServerKeyInvalid):
        files.retire("ab" * 32, NOW)


def test_xkey_server_syntax_round_trips_through_the_client_parser() -> None:
    """XKEY SERVER parses (and takes no argument); the server's response, literal
    included, reads back in the client as the same key and material."""
    assert parse_arguments(b"server") == ServerKeys()
    with pytest.raises(BadCommand):
        parse_arguments(b"SERVER x")
    key = ec.generate_private_key(ec.SECP256R1())
    entry = smime_server_key(generate_smime(KeyUsage.ENCRYPT, NOW, key), KeyUsage.ENCRYPT, NOW)
    response = server_key_response(entry)
    assert response.startswith(b"XKEY SERVER (FORMAT SMIME USAGE (ENCRYPT) FINGERPRINT ")
    (info,) = parse_server_keys([response[len(b"XKEY ") :]])
    assert info.material.encode() == entry.public
    assert (info.fingerprint, info.usage, info.not_after) == (
        entry.fingerprint,
        ("ENCRYPT",),
        entry.not_after,
    )
    assert info.file_name() == "server-smime-encrypt.pem"
