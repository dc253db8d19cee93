"""Genuine encrypted messages made by real tools, and look-alikes that carry plaintext.

Genuine ones come from ``openssl cms -encrypt`` and ``gpg --encrypt`` only;
the look-alikes are the shapes of issue 8, finding 2: each holds a marker
in clear (or base64 of it) that must never be served under MODE ALWAYS.
Shared by the checker's unit tests (tests/mime/test_ciphertext.py) and the
end-to-end leak tests (tests/security/test_plaintext_leak.py).
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.cms.parties import Party
from tests.cms.peers import OPENSSL, require
from tests.openpgp import gpgkeys
from tests.openpgp.gpgkeys import PgpTestKeys

HEADER = b"From: dave@example.net\r\nTo: someone@example.org\r\nSubject: sealed\r\n"
PGP_MIME_TYPE = (
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc"\r\n'
)
CONTROL_PART = b"--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
DATA_PART_HEADER = b"--enc\r\nContent-Type: application/octet-stream\r\n\r\n"


def crlf(data: bytes) -> bytes:
    """``data`` with every line ending in CRLF (as the store keeps messages)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def openssl_cms(workdir: Path, content: bytes, *args: str) -> bytes:
    """``openssl cms -in content ARGS``: its output (S/MIME: CRLF line ends)."""
    source = workdir / "cms-in.txt"
    source.write_bytes(content)
    done = subprocess.run(
        [require(OPENSSL, "openssl"), "cms", "-in", str(source), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def smime_enveloped(workdir: Path, recipient: Party, content: bytes, *options: str) -> bytes:
    """A whole S/MIME message made by ``openssl cms -encrypt OPTIONS`` (default AES-256-CBC)."""
    cipher = () if any(o.startswith("-aes") for o in options) else ("-aes256",)
    made = openssl_cms(workdir, content, "-encrypt", *cipher, *options, str(recipient.cert_path))
    return HEADER + crlf(made)


def smime_signed(workdir: Path, signer: Party, content: bytes) -> bytes:
    """An ``application/pkcs7-mime; smime-type=signed-data`` message holding ``content``."""
    made = openssl_cms(
        workdir,
        content,
        *("-sign", "-nodetach", "-signer", str(signer.cert_path), "-inkey", str(signer.key_path)),
    )
    return HEADER + crlf(made)


def gpg_armored(pgp: PgpTestKeys, content: bytes, *options: str) -> bytes:
    """``gpg --armor --encrypt`` of ``content`` to alice's Curve25519 key, CRLF line ends."""
    made = gpgkeys.gpg(
        pgp.decrypt_home,
        *("--armor", "--trust-model", "always", *options),
        *("--encrypt", "-r", pgp.x25519.fingerprint),
        stdin=content,
    )
    return crlf(made)


def pgp_mime(
    armored: bytes, preamble: bytes = b"", extra: bytes = b"", epilogue: bytes = b""
) -> bytes:
    """RFC 3156 PGP/MIME around ``armored``; ``extra`` is inserted as more parts."""
    return (
        HEADER
        + b"MIME-Version: 1.0\r\n"
        + PGP_MIME_TYPE
        + b"\r\n"
        + preamble
        + CONTROL_PART
        + DATA_PART_HEADER
        + armored
        + b"\r\n"
        + extra
        + b"--enc--\r\n"
        + epilogue
    )


def inline_pgp(armored: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    """A text/plain message whose body is ``armored`` between ``before`` and ``after``."""
    return HEADER + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + before + armored + after


def body_of(message: bytes) -> bytes:
    """The body of a message (after the first blank line)."""
    return message.partition(b"\r\n\r\n")[2]


@dataclass(frozen=True)
class Genuine:
    """Real ciphertexts to build look-alikes around."""

    smime: bytes  # a whole S/MIME enveloped message
    signed: bytes  # a whole S/MIME signed-data message (application/pkcs7-mime)
    armored: bytes  # one armored OpenPGP encrypted message


@dataclass(frozen=True)
class LookAlike:
    """A message that looks encrypted but holds plaintext, and octets that would betray it."""

    message: bytes
    probes: tuple[bytes, ...]


def look_alikes(genuine: Genuine, marker: bytes) -> dict[str, LookAlike]:
    """The crafted shapes of issue 8, finding 2, each holding ``marker`` in the clear."""
    text = b"Plain text: the password is " + marker + b"!\r\n"
    encoded = base64.encodebytes(text).replace(b"\n", b"\r\n")
    signed_lines = tuple(line for line in body_of(genuine.signed).split(b"\r\n") if len(line) > 40)
    signed_body = body_of(genuine.signed)
    pkcs7 = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"

    def shape(message: bytes, *probes: bytes) -> LookAlike:
        return LookAlike(message, (marker, *probes))

    return {
        "armor-then-plaintext": shape(inline_pgp(genuine.armored, after=b"\r\n" + text)),
        "plaintext-then-armor": shape(inline_pgp(genuine.armored, before=text + b"\r\n")),
        "armor-header-only": shape(
            inline_pgp(
                b"-----BEGIN PGP MESSAGE-----\r\n\r\n" + text + b"-----END PGP MESSAGE-----\r\n"
            )
        ),
        "pgp-mime-extra-part": shape(
            pgp_mime(genuine.armored, extra=b"--enc\r\nContent-Type: text/plain\r\n\r\n" + text)
        ),
        "pgp-mime-plaintext-after-armor": shape(pgp_mime(genuine.armored + b"\r\n" + text)),
        "pgp-mime-plaintext-preamble": shape(pgp_mime(genuine.armored, preamble=text)),
        "pgp-mime-plaintext-epilogue": shape(pgp_mime(genuine.armored, epilogue=text)),
        "pkcs7-enveloped-label-plaintext": shape(
            HEADER + pkcs7 + b"Content-Transfer-Encoding: 7bit\r\n\r\n" + text
        ),
        "pkcs7-enveloped-label-base64-plaintext": shape(
            HEADER + pkcs7 + b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded,
            encoded.split(b"\r\n")[0],
        ),
        "p7m-named-plaintext": shape(
            HEADER
            + b'Content-Type: application/pkcs7-mime; name="smime.p7m"\r\n'
            + b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
            + text
        ),
        "p7m-attachment": shape(
            HEADER
            + b'Content-Type: multipart/mixed; boundary="mx"\r\n\r\n--mx\r\n'
            + b"Content-Type: text/plain\r\n\r\n"
            + text
            + b"--mx\r\nContent-Type: application/octet-stream; name=x.p7m\r\n\r\n"
            + text
            + b"--mx--\r\n"
        ),
        "signed-data-labelled-enveloped": shape(
            HEADER + pkcs7 + b"Content-Transfer-Encoding: base64\r\n\r\n" + signed_body,
            *signed_lines[:3],
        ),
        "signed-data-p7m": shape(genuine.signed, *signed_lines[:3]),
        "smime-then-plaintext": shape(genuine.smime + text),
    }
