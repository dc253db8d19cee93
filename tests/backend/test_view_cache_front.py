"""The view-cache suite (issue 9) run against fronts before Dovecot.

Every test of :mod:`tests.integration.test_view_cache` runs here unchanged
-- the cache on and off serve the same octets (openssl opens them), another
secret other octets, partial fetches reassemble to the streamed view, a restart
and lost cache entries change nothing -- each of its servers a front
(``--backend``) before a Dovecot of its own.
"""

from __future__ import annotations

import pytest

import tests.integration.test_view_cache as suite
from tests.backend.front import rerun_through_front
from tests.integration.test_view_cache import *  # noqa: F403  (the tests, fixtures)

pytestmark = pytest.mark.integration


_through_the_front = rerun_through_front(suite)
