"""``transcoder-admin --keystore`` on a front's data directory, which has no accounts file.

Fronts before Dovecot keep no accounts (the backend checks logins), so the
key and policy commands against the shared keystore take any address and
need no ``--data`` at all; everything else still needs ``--data DIR``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cms.parties import make_party
from tests.integration.conftest import REPO
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration

ALICE = "alice@example.org"


def run_admin(*args: str) -> subprocess.CompletedProcess[str]:
    """``transcoder-admin ARGS`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "transcoder.admin", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_key_and_policy_commands_need_no_accounts_file(
    tmp_path: Path, postgresql: PostgresServer
) -> None:
    """Import, policy and list work with --keystore alone and on a front's DIR without accounts."""
    dsn = postgresql.new_database()
    alice = make_party(tmp_path, "alice", ec.generate_private_key(ec.SECP256R1()))
    imported = run_admin("--keystore", dsn, "key", "import", ALICE, str(alice.cert_path))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"stored {ALICE} SMIME ")
    front_dir = tmp_path / "front"  # a front's data directory: no accounts file
    front_dir.mkdir()
    policy = run_admin(
        "--data", str(front_dir), "--keystore", dsn, "policy", ALICE, "--mode", "always"
    )
    assert policy.returncode == 0, policy.stderr
    assert policy.stdout.startswith(f"{ALICE} MODE ALWAYS FORMAT SMIME (newest key's)")
    listed = run_admin("--keystore", dsn, "key", "list", ALICE)
    assert listed.returncode == 0 and listed.stdout.count(ALICE) == 1, listed.stderr
    assert "ACTIVE" in listed.stdout


def test_other_commands_still_need_data(postgresql: PostgresServer) -> None:
    """Without --data only key and policy commands with --keystore run (exit 2 otherwise)."""
    assert run_admin("--keystore", postgresql.dsn(), "user", "list").returncode == 2
    assert run_admin("key", "list").returncode == 2
