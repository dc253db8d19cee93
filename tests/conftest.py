"""Shared pytest configuration."""

# The OpenPGP test keys, generated once per session and used by tests/keys,
# tests/imap (XKEY) and tests/integration.
from tests.keyfactory import pgp_keys

# Under CI=true a skipped test fails the run (tests/strict_ci.py).
from tests.strict_ci import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pgp_keys", "pytest_make_collect_report", "pytest_runtest_makereport"]
