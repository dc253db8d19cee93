"""``--backend`` and ``--backend-ca`` on the command line of ``twistd transcoder``."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from tests.backend.tlsfiles import make_ca
from transcoder.backend.connection import BackendAddress, BackendSettings
from transcoder.service import Options


def _parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--data", "/nonexistent", *args])
    return options


def test_backend_options_become_settings(tmp_path: Path) -> None:
    """imap:// needs no CA; imaps:// takes --backend-ca (its certificates are read at once)."""
    assert _parse()["backend"] is None
    assert _parse("--backend", "imap://127.0.0.1:143")["backend"] == BackendSettings(
        BackendAddress(False, "127.0.0.1", 143), spool_dir="/nonexistent/spool"
    )
    ca, _, _ = make_ca(tmp_path, "ca")
    settings = _parse("--backend", "imaps://mail.example.org:993", "--backend-ca", str(ca))
    assert settings["backend"] == BackendSettings(
        BackendAddress(True, "mail.example.org", 993), str(ca), spool_dir="/nonexistent/spool"
    )


def test_spool_dir_defaults_to_data_spool(tmp_path: Path) -> None:
    """--spool-dir (absolute) with --backend only; DATA/spool by default (not TMPDIR)."""
    backend = ("--backend", "imap://127.0.0.1:143")
    chosen = _parse(*backend, "--spool-dir", str(tmp_path / "sp"))["backend"]
    assert chosen.spool_dir == str(tmp_path / "sp")
    with pytest.raises(usage.UsageError):
        _parse("--spool-dir", str(tmp_path))


@pytest.mark.parametrize(
    "args",
    [
        ("--backend", "mail.example.org:143"),
        ("--backend", "imap://mail.example.org"),
        ("--backend-ca", "ca.pem"),
        ("--backend", "imap://127.0.0.1:143", "--backend-ca", "ca.pem"),
        ("--backend", "imaps://127.0.0.1:993", "--backend-ca", "/nonexistent/ca.pem"),
    ],
)
def test_wrong_backend_options_are_refused_at_start(args: tuple[str, ...]) -> None:
    """A malformed URL, a CA without imaps://, an unreadable CA file: a usage error at start."""
    with pytest.raises(usage.UsageError):
        _parse(*args)
