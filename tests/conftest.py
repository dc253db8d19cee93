"""Shared pytest configuration."""

import os

from hypothesis import HealthCheck, settings

# The OpenPGP test keys, generated once per session and used by tests/keys,
# tests/imap (XKEY) and tests/integration.
from tests.keyfactory import pgp_keys

# One real PostgreSQL server per run, for the keystore on PostgreSQL (issue 14).
from tests.postgres import postgresql

# Under CI=true a skipped test fails the run (tests/strict_ci.py).
from tests.strict_ci import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pgp_keys", "postgresql", "pytest_make_collect_report", "pytest_runtest_makereport"]

# Hypothesis profiles (tests/security/README.md): "ci", the default, explores
# the same examples on every run (derandomized, no example database) so a CI
# failure reproduces; "long" (HYPOTHESIS_PROFILE=long) is for fuzzing by hand.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
