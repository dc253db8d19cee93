"""Key parsing under mutation: a mutated OpenPGP key is refused, or stored exactly as sent.

Real gpg keys are mutated at the packet level (bit flips, MPI re-encoding,
corrupted, dropped, duplicated, swapped and foreign packets, replaced user
IDs, cut and grown bodies) and framed as binary, armor or with a flipped
octet on the wire.  Each result must be refused with ``XKEY-INVALID`` or
``XKEY-ADDRESS`` (never another error), or stored with exactly the
original fingerprint, which must also be that of the primary key packet
sent, a self-signature on a user ID of the account and a bound encryption
subkey -- as a fresh gpg in a separate home judges the stored material
(:func:`tests.keys.surgery.gpg_verdict`), not our code.

Budget: 200 examples under the ``ci`` hypothesis profile (the same ones on
every run), a hundred times as many under ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE
from tests.keys.surgery import (
    PUBLIC_KEY,
    PUBLIC_SUBKEY,
    SIGNATURE,
    USER_ID,
    Packets,
    SpoofKeys,
    armor,
    assert_stored_as_sent,
    flip_signature,
    join,
    reencode_mpi_bits,
    split_packets,
    spoof_keys,
    v4_fingerprint,
)
from transcoder.errors import ClientError
from transcoder.keys.model import OpenPgpDetails
from transcoder.keys.openpgp import validate_openpgp_key

__all__ = ["spoof_keys"]

#: Examples per run: 200 under the ``ci`` profile (100 examples), 100 times that under ``long``.
EXAMPLES = 200 * max(1, settings.default.max_examples // 100)

USER_IDS = (
    b"Alice <alice@example.org>",
    b"Mallory <alice@example.org>",
    b"Alice <alice@attacker.example>",
    b"alice@example.org",
    b"",
)
KINDS = ("flip", "set", "bits", "sig", "drop", "dup", "swap", "foreign", "uid", "cut", "grow")


@dataclass(frozen=True)
class Op:
    """One packet-level mutation; ``at``, ``where`` and ``value`` are reduced modulo what fits."""

    kind: str
    at: int
    where: int
    value: int


@dataclass(frozen=True)
class Mutation:
    """Which key to start from, what to do to it and how to frame the result."""

    base: str
    ops: tuple[Op, ...]
    framing: str
    flip_at: int


_octet = st.integers(0, 255)
_index = st.integers(0, 10_000)
mutations = st.builds(
    Mutation,
    base=st.sampled_from(("alice_25519", "alice_rsa", "rich")),
    ops=st.lists(
        st.builds(Op, st.sampled_from(KINDS), _index, _index, _octet), min_size=1, max_size=3
    ).map(tuple),
    framing=st.sampled_from(("binary", "armor", "wire")),
    flip_at=_index,
)


def _pick(packets: Packets, op: Op, tags: tuple[int, ...]) -> int | None:
    """The position of one packet with one of ``tags`` (chosen by ``op.at``), if any."""
    found = [i for i, (tag, _) in enumerate(packets) if tag in tags]
    return found[op.at % len(found)] if found else None


def _edit_body(body: bytes, op: Op) -> bytes:
    """``body`` after a body-level ``op`` (flip, set, cut, grow)."""
    if op.kind == "grow":
        return body + bytes([op.value]) * (1 + op.where % 8)
    if not body:
        return body
    i = op.where % len(body)
    if op.kind == "flip":
        return body[:i] + bytes([body[i] ^ (1 << op.value % 8)]) + body[i + 1 :]
    if op.kind == "set":
        return body[:i] + bytes([op.value]) + body[i + 1 :]
    return body[:i]  # cut


def apply(packets: Packets, op: Op, foreign: Packets) -> None:
    """Apply ``op`` to ``packets`` in place (``foreign``: another key's packets)."""
    n = len(packets)
    if op.kind in ("bits", "sig", "uid"):
        tags = {"bits": (PUBLIC_KEY, PUBLIC_SUBKEY), "sig": (SIGNATURE,), "uid": (USER_ID,)}
        i = _pick(packets, op, tags[op.kind])
        if i is None:
            return
        tag, body = packets[i]
        if op.kind == "bits":
            body = reencode_mpi_bits(body)
        elif op.kind == "sig":
            body = flip_signature(body)
        else:
            body = USER_IDS[op.value % len(USER_IDS)]
        packets[i] = (tag, body)
    elif op.kind == "drop" and n > 1:
        packets.pop(op.at % n)
    elif op.kind == "dup":
        packets.insert(op.where % (n + 1), packets[op.at % n])
    elif op.kind == "swap":
        i, j = op.at % n, op.where % n
        packets[i], packets[j] = packets[j], packets[i]
    elif op.kind == "foreign":
        packets.insert(op.where % (n + 1), foreign[op.at % len(foreign)])
    elif op.kind in ("flip", "set", "cut", "grow"):
        tag, body = packets[op.at % n]
        packets[op.at % n] = (tag, _edit_body(body, op))


def build(mutation: Mutation, original: bytes, foreign: bytes) -> tuple[bytes, bytes]:
    """``(what is sent, its binary packets)`` for ``mutation`` of ``original``."""
    packets = split_packets(original)
    for op in mutation.ops:
        apply(packets, op, split_packets(foreign))
    binary = join(packets)
    if mutation.framing == "armor":
        return armor(binary), binary
    if mutation.framing == "wire":
        i = mutation.flip_at % len(binary)
        binary = binary[:i] + bytes([binary[i] ^ 0x10]) + binary[i + 1 :]
    return binary, binary


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutation=mutations)
def test_mutated_key_refused_or_stored_as_sent(
    pgp_keys: PgpKeys, spoof_keys: SpoofKeys, mutation: Mutation
) -> None:
    """A mutated key is refused (XKEY-INVALID/-ADDRESS) or stored exactly as originally sent."""
    original = spoof_keys.rich if mutation.base == "rich" else getattr(pgp_keys, mutation.base)
    original_fpr = v4_fingerprint(split_packets(original)[0][1])
    sent, binary = build(mutation, original, pgp_keys.bob)
    try:
        key = validate_openpgp_key(sent, ALICE, datetime.now(UTC))
    except ClientError as refused:
        assert refused.code in ("XKEY-INVALID", "XKEY-ADDRESS"), refused
        return
    assert key.fingerprint.upper() == original_fpr
    assert isinstance(key.details, OpenPgpDetails)
    assert_stored_as_sent(key.material, binary, key.details.encryption_subkeys[0], ALICE)
