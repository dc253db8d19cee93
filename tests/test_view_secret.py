"""The view secret file (issue 9): made once, atomically, private; read strictly."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from transcoder.errors import ConfigurationError
from transcoder.view_secret import create_view_secret, load_view_secret, read_view_secret


def test_first_start_creates_a_private_32_octet_secret_and_later_starts_reuse_it(
    tmp_path: Path,
) -> None:
    """DIR/view-secret: 32 octets, mode 0600, made once; the next load reads the same one."""
    secret, path, created = load_view_secret(tmp_path, None)
    assert created and path == tmp_path / "view-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == secret.value and len(secret.value) == 32
    again, _, created_again = load_view_secret(tmp_path, None)
    assert again == secret and not created_again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view-secret"]  # no temporary left


def test_creators_racing_on_one_directory_agree_on_one_secret(tmp_path: Path) -> None:
    """Servers starting at once: exactly one creates the file, all read the same secret."""
    path = tmp_path / "view-secret"
    barrier = threading.Barrier(8)
    created: list[bool] = []

    def start() -> None:
        barrier.wait()
        created.append(create_view_secret(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert created.count(True) == 1
    assert len({read_view_secret(path).value for _ in range(3)}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["view-secret"]


def test_an_existing_secret_is_never_replaced(tmp_path: Path) -> None:
    """create_view_secret leaves an existing file as it is."""
    path = tmp_path / "view-secret"
    path.write_bytes(b"\x01" * 32)
    path.chmod(0o600)
    assert not create_view_secret(path)
    assert read_view_secret(path).value == b"\x01" * 32


def test_view_secret_option_reads_the_named_file_and_never_creates_it(tmp_path: Path) -> None:
    """--view-secret FILE: used as it is; a missing file is an error, never a new secret."""
    shared = tmp_path / "shared-secret"
    shared.write_bytes(b"\x02" * 32)
    shared.chmod(0o640)  # a group of services may share it
    secret, path, created = load_view_secret(tmp_path / "data", str(shared))
    assert secret.value == b"\x02" * 32 and path == shared and not created
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_view_secret(tmp_path, str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists() and not (tmp_path / "view-secret").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64])
def test_a_secret_of_the_wrong_size_is_refused(tmp_path: Path, content: bytes) -> None:
    """Only exactly 32 octets make a secret."""
    path = tmp_path / "view-secret"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="octets"):
        read_view_secret(path)


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o644])
def test_a_secret_open_to_other_users_is_refused(tmp_path: Path, mode: int) -> None:
    """A file others may read or write is no secret: the server refuses it."""
    path = tmp_path / "view-secret"
    path.write_bytes(os.urandom(32))
    path.chmod(mode)
    with pytest.raises(ConfigurationError, match="chmod"):
        read_view_secret(path)
