"""Which server key signs views (issue 16): only the current signing key, checked to be a
signing-only certificate; a rotation is recorded before the new key is used; a retired
key is never handed out again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.keys.certs import key_usage, make_cert
from tests.signing.signed_views import START
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys import (
    generate_smime,
    new_private_key,
    private_pem,
    smime_server_key,
)
from transcoder.keys.server_keys_files import ServerKeyFiles
from transcoder.signing.signers import ServerSigning, check_signing_certificate, load_signer
from transcoder.transcoders import TranscodeFailed


def files_with_signing_key(root: Path) -> tuple[ServerKeyFiles, str]:
    """DIR/server-keys with an imported S/MIME signing key (no gpg involved); its fingerprint."""
    files = ServerKeyFiles(root / "server-keys")
    key = new_private_key("ec")
    cert = generate_smime(KeyUsage.SIGN, START, key)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    entry = files.import_smime(pem, private_pem(key), KeyUsage.SIGN, START)
    return files, entry.fingerprint


def test_the_current_key_signs_and_a_rotation_is_recorded_first(tmp_path: Path) -> None:
    """signer() is the current signing key; after a rotation current() records the new keys
    once (the server-wide epoch moves) and signer() is the new key, never the old one."""
    files, first = files_with_signing_key(tmp_path)
    signing = ServerSigning(files)
    notes: list[str] = []
    signing.track(lambda: notes.append(signing.fingerprints()))
    assert signing.signer(KeyFormat.SMIME).fingerprint == first
    assert signing.current() == f"SMIME={first}" and notes == []
    files.rotate(KeyFormat.SMIME, START)
    new = files.current_for(KeyFormat.SMIME, KeyUsage.SIGN)
    assert new is not None and new.fingerprint != first
    assert signing.current() == f"SMIME={new.fingerprint}"
    assert notes == [f"SMIME={new.fingerprint}"]
    signing.current()
    assert len(notes) == 1
    assert signing.signer(KeyFormat.SMIME).fingerprint == new.fingerprint


def test_a_retired_signing_key_is_never_handed_out(tmp_path: Path) -> None:
    """server-key retire: no current signing key, so signing fails closed; the retired key's
    private file is still there, and still not used."""
    files, first = files_with_signing_key(tmp_path)
    signing = ServerSigning(files)
    signing.signer(KeyFormat.SMIME)
    files.retire(first, START)
    assert (files.root / f"{first}.key").exists()
    with pytest.raises(TranscodeFailed) as failed:
        signing.signer(KeyFormat.SMIME)
    assert "no current server SMIME signing key" in failed.value.detail
    with pytest.raises(TranscodeFailed):
        ServerSigning(None).signer(KeyFormat.SMIME)


def test_an_encryption_certificate_never_signs(tmp_path: Path) -> None:
    """Dual key pairs: the server's encryption certificate (keyAgreement), a certificate that
    allows signing and encipherment, and an ENCRYPT-role index entry are all refused."""
    key = new_private_key("ec")
    encryption = generate_smime(KeyUsage.ENCRYPT, START, key)
    with pytest.raises(TranscodeFailed) as failed:
        check_signing_certificate(encryption)
    assert "lacks digitalSignature" in failed.value.detail
    both = make_cert(
        new_private_key("rsa"), usage=key_usage(digital_signature=True, key_encipherment=True)
    )
    with pytest.raises(TranscodeFailed) as failed:
        check_signing_certificate(both)
    assert "also allows encryption" in failed.value.detail
    entry = smime_server_key(encryption, KeyUsage.ENCRYPT, START)
    with pytest.raises(TranscodeFailed) as failed:
        load_signer(entry, private_pem(key))
    assert "not a signing key" in failed.value.detail
    # Even an entry claiming SIGN for the encryption certificate is refused by its keyUsage.
    claimed = dataclasses.replace(entry, usages=frozenset({KeyUsage.SIGN}))
    with pytest.raises(TranscodeFailed) as failed:
        load_signer(claimed, private_pem(key))
    assert "lacks digitalSignature" in failed.value.detail


def test_a_key_not_matching_its_certificate_is_refused() -> None:
    """The signing certificate with another private key: refused, nothing signed."""
    cert = generate_smime(KeyUsage.SIGN, START, new_private_key("ec"))
    entry = smime_server_key(cert, KeyUsage.SIGN, START)
    with pytest.raises(TranscodeFailed) as failed:
        load_signer(entry, private_pem(new_private_key("ec")))
    assert "does not belong" in failed.value.detail
