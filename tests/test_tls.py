"""The server's TLS identity: generated once, private, checked for a matching key."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from transcoder.errors import ConfigurationError
from transcoder.tls import TLSFiles, ensure_self_signed, load_pem_pair

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


def test_generated_pair_is_private_and_loads_in_openssl(tmp_path: Path) -> None:
    """The generated key is mode 0600 and the pair loads into an OpenSSL context."""
    files = ensure_self_signed(tmp_path / "tls", hostname="mail.example.org", now=lambda: NOW)
    assert files.private_key.stat().st_mode & 0o077 == 0
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.certificate, files.private_key)
    cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"mail.example.org", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc


def test_existing_pair_is_kept(tmp_path: Path) -> None:
    """A second start reuses the certificate instead of making a new one (clients pin it)."""
    first = ensure_self_signed(tmp_path / "tls", now=lambda: NOW)
    before = first.certificate.read_bytes()
    ensure_self_signed(tmp_path / "tls", now=lambda: NOW)
    assert first.certificate.read_bytes() == before


def test_mismatched_key_is_refused(tmp_path: Path) -> None:
    """A certificate with somebody else's key is a configuration error, not a broken handshake."""
    a = ensure_self_signed(tmp_path / "a", now=lambda: NOW)
    b = ensure_self_signed(tmp_path / "b", now=lambda: NOW)
    with pytest.raises(ConfigurationError, match="do not match"):
        load_pem_pair(TLSFiles(a.certificate, b.private_key))


def test_unreadable_files_are_a_configuration_error(tmp_path: Path) -> None:
    """Missing files give a one-line configuration error."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_pem_pair(TLSFiles(tmp_path / "none.crt", tmp_path / "none.key"))
