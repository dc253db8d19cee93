"""``--keystore`` of the server and of transcoder-admin: what is accepted, what a start without
its keystore says (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from tests.integration.conftest import PASSWORD, admin
from tests.postgres import PostgresServer
from transcoder.service import Options, makeService


def test_only_postgresql_uris_are_accepted(tmp_path: Path) -> None:
    """The server refuses a --keystore that is no postgresql:// URI; the default is keys.db."""
    options = Options()
    options.parseOptions(["--data", str(tmp_path)])
    assert options["keystore"] is None
    for wrong in ("sqlite:///keys.db", str(tmp_path / "keys.db")):
        with pytest.raises(usage.UsageError, match="postgresql://"):
            Options().parseOptions(["--data", str(tmp_path), "--keystore", wrong])
    Options().parseOptions(["--data", str(tmp_path), "--keystore", "postgresql://u@h/db"])


def test_a_server_without_its_keystore_does_not_start(tmp_path: Path) -> None:
    """PostgreSQL unreachable at start: one line naming the keystore, never its password."""
    server = PostgresServer()
    try:
        server.start()
        dsn = server.new_database().replace("postgres@", "postgres:hunter2@")
    finally:
        server.remove()
    options = Options()
    options.parseOptions(["--data", str(tmp_path / "data"), "--keystore", dsn])
    with pytest.raises(SystemExit) as stopped:
        makeService(options)
    message = str(stopped.value)
    assert message.startswith("transcoder: cannot open keystore") and "hunter2" not in message


def test_admin_refuses_another_keystore_uri(tmp_path: Path) -> None:
    """transcoder-admin --keystore takes a postgresql:// URI only (exit 1, one line)."""
    data = tmp_path / "data"
    assert admin(data, "user", "add", "alice@example.org", stdin=PASSWORD + "\n").returncode == 0
    done = admin(data, "--keystore", "mysql://x/y", "policy", "alice@example.org")
    assert done.returncode == 1 and "postgresql://" in done.stderr
    assert not (data / "keys.db").exists()
