"""The CONVERT suite run against a front before Dovecot (``--backend``, issue 11).

Every test of :mod:`tests.integration.test_convert` runs here unchanged, its
server a front before a Dovecot of its own: CONVERT reads the message
through the same seam as FETCH, so what the front relays converts alike.
"""

from __future__ import annotations

import pytest

import tests.integration.test_convert as suite
from tests.backend.front import rerun_through_front
from tests.integration.test_convert import *  # noqa: F403  (the tests, fixtures)

pytestmark = pytest.mark.integration


_through_the_front = rerun_through_front(suite)
