"""The hypothesis profiles of tests/security/README.md: ``ci`` by default, ``long`` by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOW = (
    "import tests.conftest; from hypothesis import settings; s = settings.default;"
    " print(settings.get_current_profile_name(), s.max_examples, s.derandomize, s.database)"
)


def profile_under(environment: dict[str, str]) -> str:
    """What tests/conftest.py loads under ``environment``: name, examples, derandomize, db."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    done = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**env, **environment},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("environment", [{}, {"CI": "true"}])
def test_ci_profile_is_the_default_and_derandomized(environment: dict[str, str]) -> None:
    """Without HYPOTHESIS_PROFILE (in CI or not) the same 100 examples run every time."""
    assert profile_under(environment) == "ci 100 True None"


def test_long_profile_is_chosen_by_environment() -> None:
    """``HYPOTHESIS_PROFILE=long`` runs 10,000 fresh examples per test (the README's command)."""
    name, examples, derandomize, _ = profile_under({"HYPOTHESIS_PROFILE": "long"}).split(" ", 3)
    assert (name, examples, derandomize) == ("long", "10000", "False")
