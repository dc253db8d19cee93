"""Packet surgery on real OpenPGP keys, and gpg's own verdict on what a key became.

Deliberately independent of :mod:`transcoder.keys`: the packet reader and
writer, the v4 fingerprint (RFC 9580 section 5.5.4) and the armor here are
the tests' own, and :func:`gpg_verdict` asks a fresh gpg in a separate
GNUPGHOME, never our colon parser, whether signatures verify.

:func:`spoof_keys` is a session fixture: import it into a test module.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.keyfactory import GpgHome, scratch_gpg_home

Packets = list[tuple[int, bytes]]

SIGNATURE, PUBLIC_KEY, USER_ID, PUBLIC_SUBKEY = 2, 6, 13, 14


def split_packets(binary: bytes) -> Packets:
    """``[(tag, body)]`` of every packet, old or new format (RFC 9580 section 4.2)."""
    packets: Packets = []
    pos = 0
    while pos < len(binary):
        ctb = binary[pos]
        if not ctb & 0x80:
            raise ValueError(f"no packet header at octet {pos}")
        if ctb & 0x40:
            tag, first = ctb & 0x3F, binary[pos + 1]
            if first < 192:
                length, pos = first, pos + 2
            elif first < 224:
                length, pos = ((first - 192) << 8) + binary[pos + 2] + 192, pos + 3
            elif first == 255:
                length, pos = int.from_bytes(binary[pos + 2 : pos + 6], "big"), pos + 6
            else:
                raise ValueError("partial length")
        else:
            tag, size = (ctb >> 2) & 0x0F, (1, 2, 4, 0)[ctb & 3]
            if not size:
                raise ValueError("indeterminate length")
            length = int.from_bytes(binary[pos + 1 : pos + 1 + size], "big")
            pos += 1 + size
        if pos + length > len(binary):
            raise ValueError("truncated packet")
        packets.append((tag, binary[pos : pos + length]))
        pos += length
    return packets


def packet(tag: int, body: bytes) -> bytes:
    """One new-format packet (RFC 9580 section 4.2.1)."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def join(packets: Packets) -> bytes:
    """The packets serialized one after the other."""
    return b"".join(packet(tag, body) for tag, body in packets)


def v4_fingerprint(body: bytes) -> str:
    """The fingerprint of a v4 key packet body, upper-case hex (RFC 9580 section 5.5.4)."""
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc = (crc << 1) ^ (0x1864CFB if crc & 0x800000 else 0)
    return crc & 0xFFFFFF


def armor(binary: bytes) -> bytes:
    """``binary`` as an armored PUBLIC KEY BLOCK with its CRC-24 (RFC 9580 section 6)."""
    text = base64.b64encode(binary).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    crc = base64.b64encode(_crc24(binary).to_bytes(3, "big")).decode()
    block = ["-----BEGIN PGP PUBLIC KEY BLOCK-----", "", *lines, "=" + crc]
    return ("\n".join([*block, "-----END PGP PUBLIC KEY BLOCK-----"]) + "\n").encode()


def flip_signature(body: bytes) -> bytes:
    """A signature packet body with one octet of its last MPI (the signature value) flipped."""
    return body[:-3] + bytes([body[-3] ^ 0x55]) + body[-2:]


def reencode_mpi_bits(body: bytes) -> bytes:
    """A v4 key packet body whose first MPI claims another bit count, same octet count.

    gpg reads such an MPI as the same number and writes it back canonically,
    so it would store the key under another fingerprint than the one sent.
    """
    algorithm = body[5]
    offset = 6 if algorithm in (1, 2, 3) else 7 + body[6]  # ECC: skip the curve OID
    bits = int.from_bytes(body[offset : offset + 2], "big")
    other = bits - 1 if (bits - 1 + 7) // 8 == (bits + 7) // 8 else bits + 1
    return body[:offset] + other.to_bytes(2, "big") + body[offset + 2 :]


def after(packets: Packets, tag: int, index: int = 0) -> int:
    """Position of the ``index``-th packet with ``tag``."""
    return [i for i, (t, _) in enumerate(packets) if t == tag][index]


def user_id_at(packets: Packets, text: bytes) -> int:
    """Position of the user ID packet ``text``."""
    return packets.index((USER_ID, text))


@dataclass(frozen=True)
class Verdict:
    """What a fresh gpg makes of some key material after importing it."""

    primaries: tuple[str, ...]
    #: ``(user ID, whether a self-certification by the primary verifies)``
    user_ids: tuple[tuple[str, bool], ...]
    #: ``(fingerprint, capabilities, whether a binding by the primary verifies)``
    subkeys: tuple[tuple[str, str, bool], ...]
    listing: str


def gpg_verdict(material: bytes) -> Verdict:
    """Import ``material`` into a new GNUPGHOME and read ``--check-signatures``."""
    home = Path(tempfile.mkdtemp(prefix="test-verdict-"))
    try:
        base = ["gpg", "--homedir", str(home), "--batch", "--no-autostart"]
        subprocess.run([*base, "--import"], input=material, capture_output=True, check=False)
        listing = subprocess.run(
            [*base, "--with-colons", "--fixed-list-mode", "--check-signatures"],
            capture_output=True,
            check=False,
        ).stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return _read_verdict(listing)


def _read_verdict(listing: str) -> Verdict:
    primaries: list[str] = []
    uids: list[list[object]] = []
    subs: list[list[object]] = []
    current: list[object] | None = None
    last_key = ""
    for line in listing.splitlines():
        f = line.split(":")
        if f[0] == "pub":
            last_key, current = "pub", None
        elif f[0] == "sub":
            subs.append(["", f[11], False])
            last_key, current = "sub", subs[-1]
        elif f[0] == "fpr" and last_key == "pub":
            primaries.append(f[9])
            last_key = ""
        elif f[0] == "fpr" and last_key == "sub":
            subs[-1][0] = f[9]
            last_key = ""
        elif f[0] == "uid":
            uids.append([f[9], False])
            current = uids[-1]
        elif f[0] == "sig" and current is not None and primaries:
            good = f[1] == "!" and f[12] == primaries[-1]
            wanted = ("18",) if any(current is sub for sub in subs) else ("10", "11", "12", "13")
            if good and f[10][:2] in wanted:
                current[-1] = True
    return Verdict(
        tuple(primaries),
        tuple((str(u[0]), bool(u[1])) for u in uids),
        tuple((str(s[0]), str(s[1]), bool(s[2])) for s in subs),
        listing,
    )


def names(user_id: str, account: str) -> bool:
    """Whether ``user_id`` is ``Name <account>`` or the bare ``account`` (case-insensitive)."""
    address = user_id.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.lower() == account.lower()


def assert_stored_as_sent(material: bytes, sent: bytes, encrypt_to: str, account: str) -> None:
    """The stored ``material`` is the key in ``sent``, per a fresh gpg: same primary
    fingerprint, a verified self-signature on a user ID of ``account`` and the
    encryption subkey ``encrypt_to`` (a subkey sent) bound by a verified signature."""
    packets = split_packets(sent)
    sent_primary = v4_fingerprint(packets[0][1])
    sent_subkeys = {v4_fingerprint(body) for tag, body in packets if tag == PUBLIC_SUBKEY}
    verdict = gpg_verdict(material)
    assert verdict.primaries == (sent_primary,), verdict.listing
    assert any(ok and names(uid, account) for uid, ok in verdict.user_ids), verdict.listing
    target = encrypt_to.upper()
    assert target == sent_primary or target in sent_subkeys, verdict.listing
    if target != sent_primary:
        assert (target, "e", True) in verdict.subkeys, verdict.listing


@dataclass(frozen=True)
class SpoofKeys:
    """Keys made for spoofing tests: binary exports and fingerprints."""

    #: ed25519 primary; user IDs Alice, Alice Work (both alice@example.org),
    #: Carol; two cv25519 encryption subkeys and an ed25519 signing subkey.
    rich: bytes
    rich_fpr: str
    #: One key per user ID in :data:`ADDRESS_VARIANTS`, each with a cv25519 subkey.
    by_address: dict[str, bytes]


#: User IDs whose address differs from alice@example.org only in the domain
#: (or only in case, the last one).
ADDRESS_VARIANTS = (
    "alice@attacker.example",
    "alice@example.org.attacker.example",
    "alice@example.orgx",
    "alice@sub.example.org",
    "alice@example.org.",
    "alice@\u0435xample.org",  # Cyrillic small ie for "e": a lookalike
    "alice@xn--xample-2of.org",  # the same, as an A-label
    "Alice@Example.ORG",
)

RICH_USER_IDS = (
    b"Alice <alice@example.org>",
    b"Alice Work <alice@example.org>",
    b"Carol <carol@example.org>",
)


def _make(gpg: GpgHome) -> SpoofKeys:
    rich = gpg.generate(RICH_USER_IDS[0].decode(), "ed25519", "sign,cert")
    for uid in RICH_USER_IDS[1:]:
        gpg.run("--quick-add-uid", rich, uid.decode())
    for algo, usage in (("cv25519", "encr"), ("cv25519", "encr"), ("ed25519", "sign")):
        gpg.run("--quick-add-key", rich, algo, usage, "never")
    by_address = {}
    for address in ADDRESS_VARIANTS:
        fpr = gpg.generate(f"Alice <{address}>", "future-default")
        by_address[address] = gpg.export(fpr)
    return SpoofKeys(rich=gpg.export(rich), rich_fpr=rich, by_address=by_address)


@pytest.fixture(scope="session")
def spoof_keys() -> Iterator[SpoofKeys]:
    """The spoofing tests' keys, generated once in a scratch home that is then removed."""
    with scratch_gpg_home("test-spoof-gpg-") as gpg:
        yield _make(gpg)
