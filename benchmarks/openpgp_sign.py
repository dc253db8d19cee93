"""What signing costs the native OpenPGP encoder (issue 16, signed views).  Sans-IO, no server.

    python benchmarks/openpgp_sign.py            # 2,000 x 4 KB and 64 MB
    python benchmarks/openpgp_sign.py --quick    # 200 x 4 KB and 8 MB (a smoke run)

Makes, with gpg in a throw-away home, a user key (Curve25519 encryption
subkey) and the server's key as the server does (Ed25519 signing subkey,
:func:`transcoder.keys.server_keys_gpg.generate_openpgp`), plus an RSA-3072
signing key made by gpg; then times :func:`transcoder.openpgp.encoder.encrypt_armored`
into /dev/null without a signer and with each signer: messages per second
for small messages (where the signature itself dominates) and MB/s for a
large one (where the extra SHA-256 pass does).  Each figure is the best of
``--runs``.  One view of each kind is checked with ``gpg --decrypt``
(GOODSIG) so the figures are of views that verify.  A script to run by
hand, not a timed test.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transcoder.keys.server_keys_gpg import generate_openpgp, gpg, scratch_home
from transcoder.openpgp.encoder import encrypt_armored
from transcoder.openpgp.recipients import Recipient, recipient_from_material
from transcoder.openpgp.sign import LiteralSigner, SigningKey, signing_key_from_secret

QUIET = ("--pinentry-mode", "loopback", "--passphrase", "")


def draw(label: str, size: int) -> bytes:
    """Randomness as the server would draw it (here: the OS)."""
    return os.urandom(size)


def fingerprints(home: Path) -> list[str]:
    out = gpg(home, "--with-colons", "--list-keys").decode()
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr")]


def keys(home: Path) -> tuple[Recipient, dict[str, SigningKey]]:
    """The user's recipient, and the signing keys by name."""
    gpg(home, *QUIET, "--quick-gen-key", "user <u@example.org>", "ed25519", "cert", "never")
    primary = fingerprints(home)[0]
    gpg(home, *QUIET, "--quick-add-key", primary, "cv25519", "encr", "never")
    gpg(home, *QUIET, "--quick-add-key", primary, "rsa3072", "sign", "never")
    fprs = fingerprints(home)
    recipient = recipient_from_material(gpg(home, "--export", primary), fprs[1])
    secret = gpg(home, *QUIET, "--export-secret-keys", primary)
    server = generate_openpgp(datetime.now(UTC))
    gpg(home, "--import", data=server.entry.public)  # to check a view's signature
    signers = {
        "ed25519": signing_key_from_secret(server.secret, server.entry.subkeys[1]),
        "rsa3072": signing_key_from_secret(secret, fprs[2]),
    }
    return recipient, signers


def encrypt(data: bytes, recipient: Recipient, key: SigningKey | None) -> bytes:
    out = io.BytesIO()
    signer = None if key is None else LiteralSigner(key)
    encrypt_armored(io.BytesIO(data), len(data), out, (recipient,), draw, signer)
    return out.getvalue()


def best(runs: int, work: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    count, large = (200, 8 << 20) if args.quick else (2000, 64 << 20)
    small = [os.urandom(4000) + b"\r\n" for _ in range(count)]
    big = os.urandom(large)
    with scratch_home() as home:
        recipient, signers = keys(home)
        print(
            f"native encoder, {count} x 4 KB and one {large >> 20} MB message, best of {args.runs}"
        )
        print(f"{'signer':<10} {'4 KB msg/s':>12} {'large MB/s':>12}")
        for name, key in [("none", None), *signers.items()]:
            if key is not None:
                check = subprocess.run(
                    ["gpg", "--homedir", str(home), "--batch", "--status-fd", "1", "--decrypt"],
                    input=encrypt(small[0], recipient, key),
                    capture_output=True,
                    check=False,
                )
                assert b"[GNUPG:] GOODSIG" in check.stdout, check.stderr
            per_small = best(args.runs, lambda k=key: [encrypt(m, recipient, k) for m in small])
            per_large = best(args.runs, lambda k=key: encrypt(big, recipient, k))
            print(f"{name:<10} {count / per_small:>12,.0f} {large / per_large / 1e6:>12,.1f}")


if __name__ == "__main__":
    main()
