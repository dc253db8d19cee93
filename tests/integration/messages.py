"""Test messages, built once here so every integration test speaks of the same octets."""

from __future__ import annotations

SIMPLE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Cc: carol@example.org\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Date: Tue, 07 Feb 2024 10:00:00 +0100\r\n"
    b"Message-ID: <q1@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
    b"Second line of the body.\r\n"
)

MULTIPART = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: Alice Example <alice@example.org>\r\n"
    b"Subject: Holiday photos\r\n"
    b"Date: Wed, 08 Feb 2024 11:30:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="=_MiXeD_CaSe"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--=_MiXeD_CaSe\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"See attached.\r\n"
    b"--=_MiXeD_CaSe\r\n"
    b'Content-Type: application/octet-stream; name="Photo.JPG"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="Photo.JPG"\r\n'
    b"\r\n"
    b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n"
    b"--=_MiXeD_CaSe--\r\n"
    b"epilogue\r\n"
)


def with_marker(marker: str) -> bytes:
    """A small message whose body holds ``marker``."""
    return (
        b"From: sender@example.net\r\nTo: alice@example.org\r\nSubject: marker\r\n\r\n"
        + marker.encode()
        + b"\r\n"
    )
