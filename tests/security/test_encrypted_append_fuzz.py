"""Attack class: malformed ciphertext APPENDed to the server (issue 16).  Mutations of real
``openssl cms -encrypt`` output (flipped, cut, inserted octets in the DER; deep BER nesting)
end in exactly one of three outcomes -- stored as sent, decrypted, or NotDecryptable (NO
[CANNOT]) -- never another exception (which would be NO [SERVERBUG] for client input)."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.inbound.streamed import openssl_encrypt_der
from transcoder.inbound import NotDecryptable, decrypt_append
from transcoder.keys.model import KeyFormat, KeyUsage
from transcoder.keys.server_keys_files import ServerKeyFiles

#: Mutations per run: 300 in the ordinary suite (about 40 s on a loaded 2-CPU machine),
#: 3,000 under HYPOTHESIS_PROFILE=long, the profile of the long fuzzing runs.
MUTATIONS = 3000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 300

HEADER = (
    b"Subject: x\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerKeyFiles, dict]]:
    """Server keys (an RSA key retired by an EC one) and openssl's DER to each, CBC/GCM."""
    root = tmp_path_factory.mktemp("fz")
    files = ServerKeyFiles(root / "sk", gpg_binary="no-such-gpg")
    now = datetime.now(UTC) - timedelta(minutes=1)
    files.ensure(now, algorithm="rsa")
    files.rotate(KeyFormat.SMIME, now)
    (root / "entity").write_bytes(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    made = {}
    for key in files.decryption_keys(KeyFormat.SMIME):
        if KeyUsage.ENCRYPT not in key.usages:
            continue
        (root / "c.pem").write_bytes(key.public)
        for cipher in ("aes-256-cbc", "aes-128-gcm"):
            for stream in ((), ("-stream",)):
                made[(key.algorithm, cipher, stream)] = openssl_encrypt_der(
                    root / "entity", root / "c.pem", cipher, stream=bool(stream)
                )
    yield files, made


def outcome(files: ServerKeyFiles, der: bytes) -> str:
    message = HEADER + base64.encodebytes(der)
    try:
        found = decrypt_append(message, files)
    except NotDecryptable:
        return "refused"
    return "as-sent" if found is None else "decrypted"


def test_the_unmutated_messages_decrypt(keyed: tuple[ServerKeyFiles, dict]) -> None:
    """The baseline: each of openssl's messages decrypts."""
    files, made = keyed
    assert len(made) == 8
    assert {outcome(files, der) for der in made.values()} == {"decrypted"}


def test_mutations_end_in_one_of_three_outcomes(keyed: tuple[ServerKeyFiles, dict]) -> None:
    """MUTATIONS mutated messages: every outcome is as-sent, decrypted or refused."""
    files, made = keyed
    rng = random.Random(16)
    seen = set()
    originals = list(made.values())
    for _ in range(MUTATIONS):
        der = bytearray(rng.choice(originals))
        kind = rng.randrange(3)
        at = rng.randrange(len(der))
        if kind == 0:
            der[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del der[at:]
        else:
            der[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        seen.add(outcome(files, bytes(der)))
    assert seen <= {"as-sent", "decrypted", "refused"}
    assert "refused" in seen and "as-sent" in seen


def test_deep_nesting_is_not_a_crash(keyed: tuple[ServerKeyFiles, dict]) -> None:
    """Indefinite-length nesting 10,000 deep where the recipient infos should be: as sent."""
    files, _ = keyed
    oid = bytes.fromhex("06092a864886f70d010703")  # envelopedData
    der = b"\x30\x80" + oid + b"\xa0\x80\x30\x80\x02\x01\x00" + b"\x31\x80" * 10_000
    assert outcome(files, der) == "as-sent"
