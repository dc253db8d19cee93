"""The transcoding invariants suite (issues 4-5, 9) run against the front before Dovecot.

Every test of :mod:`tests.integration.test_transcoded_invariants` -- policy OFF
serves the stored octets, switching policy, fail closed, ciphertext passed
through, header protection, --obscure-subject... -- runs here unchanged; for
this module only, the suite's ``running_server`` starts a Dovecot holding the
accounts and a front (``--backend``) before it, with the same extra options.
"""

from __future__ import annotations

import pytest

import tests.integration.test_transcoded_invariants as suite
from tests.backend.front import rerun_through_front
from tests.integration.test_transcoded_invariants import *  # noqa: F403  (the tests, fixtures)

pytestmark = pytest.mark.integration


_through_the_front = rerun_through_front(suite)
