"""The server-chosen content cipher and RSA padding of the S/MIME messages we produce.

Defaults follow issue 4: AES-256-CBC with PKCS#1 v1.5, the widest client
support (RFC 8551 section 2.7 lists AES-128-CBC as the MUST; every client that
does it also does AES-256-CBC).  AES-GCM gives AuthEnvelopedData (RFC 5083,
RFC 5084); RSAES-OAEP uses SHA-256 and MGF1-SHA-256 (RFC 8017 section 7.1,
RFC 3560).
"""

from __future__ import annotations

from dataclasses import dataclass

from transcoder.errors import ConfigurationError

#: Content ciphers, as spelled by ``--smime-cipher``.
CIPHERS: tuple[str, ...] = ("aes256-cbc", "aes128-cbc", "aes256-gcm", "aes128-gcm")
#: RSA key-transport paddings, as spelled by ``--smime-rsa-padding``.
RSA_PADDINGS: tuple[str, ...] = ("pkcs1v15", "oaep")


@dataclass(frozen=True)
class CmsSettings:
    """Which content cipher and RSA padding to use; validated on construction."""

    cipher: str = "aes256-cbc"
    rsa_padding: str = "pkcs1v15"

    def __post_init__(self) -> None:
        if self.cipher not in CIPHERS:
            raise ConfigurationError(
                f"unknown S/MIME cipher {self.cipher!r}; choose one of {', '.join(CIPHERS)}"
            )
        if self.rsa_padding not in RSA_PADDINGS:
            raise ConfigurationError(
                f"unknown RSA padding {self.rsa_padding!r}; choose one of {', '.join(RSA_PADDINGS)}"
            )

    @property
    def key_size(self) -> int:
        """Octets of the content-encryption key (16 for AES-128, 32 for AES-256)."""
        return 16 if self.cipher.startswith("aes128") else 32

    @property
    def authenticated(self) -> bool:
        """True for AES-GCM: the message is AuthEnvelopedData (RFC 5083), not EnvelopedData."""
        return self.cipher.endswith("-gcm")

    @property
    def settings_id(self) -> str:
        """A stable string naming everything here that changes the output (for cache keys)."""
        return f"{self.cipher}+{self.rsa_padding}"


def smime_type(settings: CmsSettings) -> str:
    """The ``smime-type`` parameter of ``application/pkcs7-mime`` (RFC 8551 section 3.2.2)."""
    return "authEnveloped-data" if settings.authenticated else "enveloped-data"
