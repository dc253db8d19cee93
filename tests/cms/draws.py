"""Stand-ins for the encoder's random draws, for tests that must know every random octet."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from transcoder.cms.ecdh import EXTRA_OCTETS, PROFILES


class FixedRandom:
    """Draws of counted, recognisable octets (1s, then 2s, ...); records every (label, size)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self._counter = itertools.count(1)

    def __call__(self, label: str, size: int) -> bytes:
        self.requests.append((label, size))
        return bytes([next(self._counter)]) * size


class LabelledDraws:
    """Given octets for some labels; every other label is served by ``fallback(size)``."""

    def __init__(self, values: dict[str, bytes], fallback: Callable[[int], bytes]) -> None:
        self.values = values
        self.fallback = fallback

    def __call__(self, label: str, size: int) -> bytes:
        if label in self.values:
            assert len(self.values[label]) == size, (label, size)
            return self.values[label]
        return self.fallback(size)


def scalar_draw(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The ``ecdh-scalar`` draw that makes ``key`` the ephemeral key.

    The encoder maps the drawn integer c to (c mod (n - 1)) + 1 (FIPS 186-5
    appendix A.2.1), so c = d - 1, written on len(n) + 8 octets, gives d.
    """
    order = PROFILES[key.curve.name].order
    size = (order.bit_length() + 7) // 8 + EXTRA_OCTETS
    return (key.private_numbers().private_value - 1).to_bytes(size, "big")


def counting_draw(label: str, size: int) -> bytes:
    """A deterministic stand-in for system randomness: 1, 2, 3, ... whatever the label."""
    return bytes((i % 255) + 1 for i in range(size))


def vector_draws(case: dict[str, str]) -> LabelledDraws:
    """The draws of a stored vector (tests/vectors/cms): the CEK and IV from ``random``
    (in that order), the P-256 ephemeral key from the scalar ``ephemeral``."""
    random = bytes.fromhex(case["random"])
    key_size = 16 if case["cipher"].startswith("aes128") else 32
    ephemeral = ec.derive_private_key(int(case["ephemeral"], 16), ec.SECP256R1())
    values = {
        "cms/cek": random[:key_size],
        "cms/iv": random[key_size:],
        "cms/recipient/0/ecdh-scalar": scalar_draw(ephemeral),
    }
    return LabelledDraws(values, _no_other_draw)


def _no_other_draw(size: int) -> bytes:
    raise AssertionError("a vector draws nothing but its CEK, IV and ephemeral scalar")
