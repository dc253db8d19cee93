"""The view-cache suite (issue 9) run against fronts before Dovecot.

Every test of :mod:`tests.integration.test_view_cache` runs here unchanged
-- the cache on and off serve the same octets (openssl opens them), another
secret other octets, partial fetches reassemble to the streamed view, a restart
and lost cache entries change nothing -- each of its servers a front
(``--backend``) before a Dovecot of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.integration.test_view_cache as suite
from tests.backend.front import front_server
from tests.integration.test_view_cache import *  # noqa: F403  (the tests, fixtures)
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _through_the_front() -> Iterator[None]:
    """This module's servers are fronts before Dovecot (the suite's own module is untouched)."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(suite, "running_server", front_server)
        yield
