"""Fuzzing S/MIME certificate validation: mutated DER and PEM only ever give our key errors.

XKEY PUT hands whatever a user uploads to
:func:`transcoder.keys.smime.validate_certificate` (through
:func:`transcoder.keys.validate.validate_key`).  Starting from genuine
certificates -- RSA and EC, self-signed and with a chain, DER, PEM and
PKCS#7 bundles -- mutations that know DER's tag-length-value layout (a tag
or length changed, a value cut, repeated or replaced) and blind ones
(octets flipped, the PEM's base64 damaged) must each end in a stored key or
a :class:`~transcoder.errors.ClientError` (``XKEY-INVALID``,
``XKEY-ADDRESS``, ``XKEY-TOOBIG``), never another exception.
"""

from __future__ import annotations

import base64
import contextlib
import random
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from tests.keys.certs import ALICE, NOW, der, key_usage, make_ca, make_cert, pem, pkcs7_bundle
from tests.security.fuzzing import scaled
from transcoder.errors import ClientError
from transcoder.keys.smime import validate_certificate
from transcoder.keys.validate import validate_key

_RSA = rsa.generate_private_key(65537, 2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_CA = make_ca()
_ISSUED = make_cert(_EC, issuer=_CA, usage=key_usage(key_agreement=True, digital_signature=True))
#: Genuine uploads a user might send, each of them accepted as it is.
GENUINE = (
    der(make_cert(_RSA)),
    der(make_cert(_EC)),
    pem(make_cert(_RSA)),
    pem(_ISSUED, _CA.cert),
    pkcs7_bundle([_CA.cert, _ISSUED]),
    pkcs7_bundle([_ISSUED, _CA.cert], encoding="PEM"),
)


@dataclass(frozen=True)
class Node:
    """One DER tag-length-value: where its tag, length octets and value lie."""

    tag: int
    length_at: int
    value_at: int
    end: int


def nodes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[Node]:
    """Every TLV of ``data[start:end]``, constructed ones descended into (stops at bad DER)."""
    end = len(data) if end is None else end
    found: list[Node] = []
    pos = start
    while pos + 2 <= end and depth < 20:
        tag, first = data[pos], data[pos + 1]
        value_at, length = pos + 2, first
        if first & 0x80:
            count = first & 0x7F
            value_at = pos + 2 + count
            length = int.from_bytes(data[pos + 2 : value_at], "big") if count else -1
        if length < 0 or value_at + length > end:
            break
        found.append(Node(tag, pos + 1, value_at, value_at + length))
        if tag & 0x20:  # constructed: its value is more TLVs
            found += nodes(data, value_at, value_at + length, depth + 1)
        pos = value_at + length
    return found


def mutate_der(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one TLV's tag, length or value damaged."""
    found = nodes(data)
    if not found:
        return data
    node = rng.choice(found)
    op = rng.randrange(6)
    if op == 0:  # another tag
        tag = rng.choice((0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x16, 0x17, 0x30, 0x31, 0xA0))
        return data[: node.length_at - 1] + bytes([tag]) + data[node.length_at :]
    if op == 1:  # another length: off by some, indefinite, or absurdly long form
        length = node.end - node.value_at
        octets = rng.choice(
            (
                bytes([max(0, min(127, length + rng.choice((-2, -1, 1, 2))))]),
                b"\x80",
                b"\x84\xff\xff\xff\xff",
                b"\x89" + b"\x01" * 9,
                b"\x82" + max(0, length - 1).to_bytes(2, "big", signed=False)[-2:],
            )
        )
        return data[: node.length_at] + octets + data[node.value_at :]
    if op == 2:  # value cut short, lengths left as they were
        cut = rng.randrange(node.value_at, node.end + 1)
        return data[:cut] + data[node.end :]
    if op == 3:  # the whole TLV repeated (a duplicate extension, name, certificate)
        whole = data[node.length_at - 1 : node.end]
        return data[: node.end] + whole + data[node.end :]
    if op == 4:  # value replaced by random octets of the same size
        noise = bytes(rng.randrange(256) for _ in range(node.end - node.value_at))
        return data[: node.value_at] + noise + data[node.end :]
    return data[: node.value_at] + data[node.end :]  # value emptied


def mutate_octets(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few octets flipped, dropped or inserted."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(data))
        op = rng.randrange(3)
        if op == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[at : at + rng.randrange(1, 8)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    return bytes(data)


def mutate_pem(rng: random.Random, data: bytes) -> bytes:
    """A PEM upload with one block's DER mutated, or its armor or base64 damaged."""
    blocks = data.split(b"-----END ")
    roll = rng.randrange(3)
    if roll == 0 and len(blocks) > 1:  # mutate the DER inside the first block
        head, _, body = blocks[0].partition(b"-----\n")
        inner = mutate_der(rng, base64.b64decode(body))
        wrapped = base64.encodebytes(inner)
        return head + b"-----\n" + wrapped + b"-----END " + b"-----END ".join(blocks[1:])
    if roll == 1:
        damage = (b"-----END CERTIFICATE-----", b"-----BEGIN CERTIFICATE-----", b"=", b"*", b"\x00")
        at = rng.randrange(len(data))
        return data[:at] + rng.choice(damage) + data[at:]
    return mutate_octets(rng, data)


def check_upload(data: bytes) -> None:
    """Validate ``data`` as XKEY PUT does, with and without trust anchors: key or ClientError."""
    for validate in (
        lambda: validate_certificate(data, ALICE, NOW),
        lambda: validate_certificate(data, ALICE, NOW, trust_anchors=[_CA.cert]),
        lambda: validate_key(data, ALICE, NOW, max_bytes=64 * 1024),
    ):
        with contextlib.suppress(ClientError):
            validate()


@scaled(200)
@given(rng=st.randoms(use_true_random=False), original=st.sampled_from(GENUINE))
def test_der_aware_mutations_give_only_key_errors(rng: random.Random, original: bytes) -> None:
    """A genuine certificate with one or two TLVs damaged: stored or refused with our errors."""
    if original.startswith(b"-----"):
        data = mutate_pem(rng, original)
    else:
        data = mutate_der(rng, original)
        if rng.random() < 0.5:
            data = mutate_der(rng, data)
    check_upload(data)


@scaled(200)
@given(rng=st.randoms(use_true_random=False), original=st.sampled_from(GENUINE))
def test_blind_mutations_give_only_key_errors(rng: random.Random, original: bytes) -> None:
    """A genuine upload with octets flipped, dropped or inserted: stored or refused, no crash."""
    check_upload(mutate_octets(rng, original))


def test_genuine_uploads_are_accepted() -> None:
    """The mutations start from certificates the validator accepts as they are."""
    for data in GENUINE:
        assert validate_certificate(data, ALICE, NOW).addresses == (ALICE,)
