"""Encrypted APPEND messages made by ``openssl cms -encrypt``, as a client would send them.

Shared by the inbound and security tests and ``benchmarks/append_decrypt.py``:
:func:`write_streamed_cms_message` makes the message on disk without holding
it in memory (``-stream``: indefinite-length BER, the content in segments);
:func:`openssl_encrypt_der` returns openssl's DER (or, with ``-stream``, BER).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def write_streamed_cms_message(
    path: Path, outer: bytes, entity: Path, cert: Path, cipher: str
) -> None:
    """Write ``outer`` (header lines), then the S/MIME message of ``entity`` encrypted to ``cert``.

    ``cipher`` is an openssl cipher name (``aes-256-cbc``, ``aes-256-gcm``);
    openssl writes its headers (``MIME-Version``, ``Content-Type``) and the
    base64 body after ``outer`` in the same file.
    """
    with open(path, "wb") as out:
        out.write(outer)
        out.flush()
        subprocess.run(
            [
                *("openssl", "cms", "-encrypt", "-stream", "-binary", f"-{cipher}"),
                *("-in", str(entity), str(cert)),
            ],
            stdout=out,
            check=True,
        )


def openssl_encrypt_der(entity: Path, cert: Path, cipher: str, *, stream: bool = False) -> bytes:
    """``entity`` encrypted to ``cert`` by ``openssl cms -encrypt -binary -outform DER``.

    With ``stream``, openssl's ``-stream`` encoding (indefinite lengths, segmented content).
    """
    return subprocess.run(
        [
            *("openssl", "cms", "-encrypt", "-binary", *(("-stream",) if stream else ())),
            *(f"-{cipher}", "-outform", "DER", "-in", str(entity), str(cert)),
        ],
        capture_output=True,
        check=True,
    ).stdout
