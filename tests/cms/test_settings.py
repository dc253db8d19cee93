"""CmsSettings: the four ciphers, the two RSA paddings, and nothing else."""

from __future__ import annotations

import itertools

import pytest

from transcoder.cms import CIPHERS, RSA_PADDINGS, CmsSettings, smime_type
from transcoder.errors import ConfigurationError


def test_defaults_are_aes256_cbc_with_pkcs1v15() -> None:
    """The default is the widest-supported choice (issue 4): AES-256-CBC, PKCS#1 v1.5."""
    settings = CmsSettings()
    assert (settings.cipher, settings.rsa_padding) == ("aes256-cbc", "pkcs1v15")
    assert settings.key_size == 32 and not settings.authenticated


@pytest.mark.parametrize(
    ("cipher", "key_size", "kind"),
    [
        ("aes128-cbc", 16, "enveloped-data"),
        ("aes256-cbc", 32, "enveloped-data"),
        ("aes128-gcm", 16, "authEnveloped-data"),
        ("aes256-gcm", 32, "authEnveloped-data"),
    ],
)
def test_cipher_properties(cipher: str, key_size: int, kind: str) -> None:
    """Key size and smime-type (RFC 8551 section 3.2.2) follow from the cipher."""
    settings = CmsSettings(cipher)
    assert settings.key_size == key_size
    assert smime_type(settings) == kind


@pytest.mark.parametrize(("cipher", "padding"), [("aes512-cbc", "oaep"), ("aes256-cbc", "pss")])
def test_unknown_values_are_configuration_errors(cipher: str, padding: str) -> None:
    """An unknown cipher or padding (a bad server option) raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        CmsSettings(cipher, padding)


def test_settings_ids_are_distinct() -> None:
    """Each combination has its own settings_id (it keys the view cache)."""
    ids = {CmsSettings(c, p).settings_id for c, p in itertools.product(CIPHERS, RSA_PADDINGS)}
    assert len(ids) == len(CIPHERS) * len(RSA_PADDINGS)
