"""RSAEP's modular power through libcrypto (issue 9 performance) agrees with Python's pow."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcoder.cms import modexp
from transcoder.cms.envelope import content_algorithm, content_algorithm_der
from transcoder.cms.settings import CIPHERS, CmsSettings

#: Odd moduli of RSA sizes (any odd n exercises BN_mod_exp's Montgomery path).
MODULI = [(1 << bits) - 159 for bits in (1024, 2048, 3072, 4096)]


def test_libcrypto_is_used_where_openssl_is_installed() -> None:
    """CI and developers have libcrypto (openssl): the fast path is the one running."""
    if os.environ.get("CI") or modexp.BACKEND != "pow":
        assert modexp.BACKEND == "libcrypto"


@given(data=st.data(), modulus=st.sampled_from(MODULI), e=st.sampled_from([3, 65537, 2**31 - 1]))
def test_mod_exp_equals_pow(data: st.DataObject, modulus: int, e: int) -> None:
    """For any m < n: libcrypto's result is pow's, I2OSP'd to the modulus length."""
    m = data.draw(st.integers(min_value=0, max_value=modulus - 1))
    length = (modulus.bit_length() + 7) // 8
    assert modexp.mod_exp(m, e, modulus, length) == pow(m, e, modulus).to_bytes(length, "big")


@pytest.mark.parametrize("cipher", CIPHERS)
def test_algorithm_template_is_asn1cryptos_encoding(cipher: str) -> None:
    """The spliced contentEncryptionAlgorithm is byte for byte what asn1crypto encodes."""
    settings = CmsSettings(cipher)
    for iv in (bytes(16), b"\xa0" * 16, os.urandom(16)):
        iv = iv[: 12 if settings.authenticated else 16]
        assert content_algorithm_der(settings, iv) == content_algorithm(settings, iv).dump()
