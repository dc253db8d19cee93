"""``m^e mod n`` for RSAEP: OpenSSL's ``BN_mod_exp`` through ctypes when libcrypto loads.

Python's ``pow`` takes about 330 us for one RSA-3072 public operation (150 us
for RSA-2048) and holds the GIL meanwhile; it was the largest single cost of
a cold FETCH of many small messages (issue 9, ``benchmarks/fetch_smime.py``).
OpenSSL does the same operation in a few tens of microseconds, and a ctypes
call releases the GIL, so worker threads encrypt on every CPU.
cryptography exposes no raw RSA operation (its ``encrypt`` pads with
OpenSSL's own randomness, which would make views differ), so the system's
``libcrypto`` -- there wherever the ``openssl`` tool is -- is called
directly: ``BN_bin2bn``, ``BN_mod_exp``, ``BN_bn2binpad`` (OpenSSL 1.1.0+).

The library is checked once against ``pow`` on a fixed vector before it is
used; if it cannot be loaded, lacks a symbol or disagrees, ``pow`` is used
(:data:`BACKEND` says which).  Neither is constant-time; for a public
exponent that is as in OpenSSL's own RSA encryption (see :mod:`.rsa`).

No twisted import here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from transcoder.cms.errors import CmsError


def _load() -> Any:
    """libcrypto with the BIGNUM functions typed, or None."""
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        pointer, size = ctypes.c_void_p, ctypes.c_int
        for function, restype, argtypes in (
            ("BN_new", pointer, []),
            ("BN_free", None, [pointer]),
            ("BN_CTX_new", pointer, []),
            ("BN_CTX_free", None, [pointer]),
            ("BN_bin2bn", pointer, [ctypes.c_char_p, size, pointer]),
            ("BN_bn2binpad", size, [pointer, ctypes.c_char_p, size]),
            ("BN_mod_exp", size, [pointer, pointer, pointer, pointer, pointer]),
        ):
            symbol = getattr(lib, function)
            symbol.restype = restype
            symbol.argtypes = argtypes
    except (OSError, AttributeError):
        return None
    return lib


def _openssl_mod_exp(lib: Any, m: int, e: int, n: int, length: int) -> bytes:
    """``m^e mod n`` as ``length`` big-endian octets, computed by libcrypto."""
    numbers = [value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big") for value in (m, e, n)]
    bns = [lib.BN_bin2bn(data, len(data), None) for data in numbers]
    result, ctx = lib.BN_new(), lib.BN_CTX_new()
    try:
        if not all(bns) or not result or not ctx:
            raise CmsError("libcrypto could not allocate a BIGNUM")
        if lib.BN_mod_exp(result, bns[0], bns[1], bns[2], ctx) != 1:
            raise CmsError("libcrypto BN_mod_exp failed")
        out = ctypes.create_string_buffer(length)
        if lib.BN_bn2binpad(result, out, length) != length:
            raise CmsError("RSA result longer than the modulus")
        return out.raw
    finally:
        for bn in (*bns, result):
            if bn:
                lib.BN_free(bn)
        if ctx:
            lib.BN_CTX_free(ctx)


def _checked(lib: Any) -> Any:
    """``lib`` if it computes a known RSA-sized power as ``pow`` does, else None."""
    if lib is None:
        return None
    n = (1 << 3071) + 0x1D  # odd, 3072 bits: the Montgomery path OpenSSL takes for RSA
    m = int.from_bytes(bytes(range(1, 200)) * 2, "big") % n
    try:
        return (
            lib
            if _openssl_mod_exp(lib, m, 65537, n, 384) == pow(m, 65537, n).to_bytes(384, "big")
            else None
        )
    except CmsError:
        return None


_LIB = _checked(_load())
#: Which implementation computes RSAEP here: "libcrypto" or "pow".
BACKEND = "libcrypto" if _LIB is not None else "pow"


def mod_exp(m: int, e: int, n: int, length: int) -> bytes:
    """I2OSP(``m^e mod n``, ``length``) (RFC 8017 sections 4.1, 5.1.1); ``0 <= m < n``, n odd."""
    if _LIB is not None:
        return _openssl_mod_exp(_LIB, m, e, n, length)
    return pow(m, e, n).to_bytes(length, "big")
