"""The transcoding invariants suite (issues 4-5, 9) run against the front before Dovecot.

Every test of :mod:`tests.integration.test_transcoded_invariants` -- policy OFF
serves the stored octets, switching policy, fail closed, ciphertext passed
through, header protection, --obscure-subject... -- runs here unchanged; for
this module only, the suite's ``running_server`` starts a Dovecot holding the
accounts and a front (``--backend``) before it, with the same extra options.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.integration.test_transcoded_invariants as suite
from tests.backend.front import front_server
from tests.integration.test_transcoded_invariants import *  # noqa: F403  (the tests, fixtures)
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
