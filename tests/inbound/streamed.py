"""An encrypted APPEND message written to disk by ``openssl cms -encrypt -stream``.

Shared by the inbound tests and ``benchmarks/append_decrypt.py``: the message
is made without holding it in memory (indefinite-length BER, the content in
segments), as a large draft from a client would arrive.
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
