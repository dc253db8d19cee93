"""The CI rule: under ``CI=true`` a skipped test fails the run (tests/strict_ci.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SKIPPING = """\
import pytest

@pytest.fixture
def gpg():
    pytest.skip("gpg is not installed")

def test_needs_gpg(gpg):
    pass

def test_skips_itself():
    pytest.skip("no non-loopback address")

def test_passes():
    pass
"""

MODULE_SKIP = """\
import pytest

pytest.skip("nothing here", allow_module_level=True)
"""


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``tmp_path`` (whose conftest uses our hooks) with ``CI`` as given."""
    (tmp_path / "conftest.py").write_text(
        "from tests.strict_ci import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_skips_fail_under_ci(tmp_path: Path, ci: str) -> None:
    """With CI set, a skip in a fixture (an error) or in a test (a failure) fails, naming why."""
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = run_pytest(tmp_path, ci)
    assert done.returncode == 1, done.stdout
    assert done.stdout.splitlines()[-1].startswith("1 failed, 1 passed, 1 error in "), done.stdout
    for reason in ("gpg is not installed", "no non-loopback address"):
        assert f"which allows no skips: {reason}" in done.stdout, done.stdout


def test_module_skip_fails_collection_under_ci(tmp_path: Path) -> None:
    """With CI set, a module skipped at collection is a collection error naming its reason."""
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    done = run_pytest(tmp_path, "true")
    assert done.returncode == 2, done.stdout
    assert "which allows no skips: nothing here" in done.stdout, done.stdout


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_skips_are_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    """Without CI (or with CI=false/0/empty) a skip is still a skip."""
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = run_pytest(tmp_path, ci)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1].startswith("1 passed, 2 skipped in "), done.stdout
