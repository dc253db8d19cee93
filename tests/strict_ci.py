"""Under CI, a skipped test is a failed test.

A test skips when something it needs is missing here: gpg, gpgsm, openssl, an
address that is not loopback.  On a developer's machine that is a line in the
summary; in CI it would let a run pass without the very tests that need those
things.  So when the environment variable ``CI`` is set to anything but an
empty string, ``0``, ``false`` or ``no`` (CI services set ``CI=true``, and so
does ``.ci/run``), every skip -- of a test or of a whole module at collection
-- is reported as a failure (an error, if it skipped in a fixture or at
collection) naming its reason.

``tests/conftest.py`` imports the two hooks below.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

_OFF = {"", "0", "false", "no"}


def in_ci() -> bool:
    """Whether the environment says this is a CI run (``CI`` set and not off)."""
    return os.environ.get("CI", "").strip().lower() not in _OFF


def _fail_skip(report: Any) -> None:
    """Turn a skipped ``report`` into a failure that says why it skipped."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    reason = str(reason).removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped under CI={os.environ.get('CI')}, which allows no skips: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test's skip, in setup or in the test itself, fails under CI."""
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module skipped at collection (``pytest.skip(allow_module_level=True)``) fails under CI."""
    report = yield
    if in_ci() and report.skipped:
        _fail_skip(report)
    return report
