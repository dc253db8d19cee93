"""The view-secret suite (issue 9) run against fronts before Dovecot.

Every test of :mod:`tests.integration.test_view_secret` runs here unchanged
-- fronts sharing the view secret serve identical octets, another secret other
octets of the same size, a restart without the view cache the same octets --
each of its servers a front (``--backend``) before a Dovecot of its own.
"""

from __future__ import annotations

import pytest

import tests.integration.test_view_secret as suite
from tests.backend.front import rerun_through_front
from tests.integration.test_view_secret import *  # noqa: F403  (the tests, fixtures)

pytestmark = pytest.mark.integration


_through_the_front = rerun_through_front(suite)
