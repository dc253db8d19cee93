"""The benchmark's session holder (:func:`transcoder.cluster.load.hold_sessions`) on a real cluster.

It is what the "sessions held" figure of ``benchmarks/cluster.py`` counts:
sessions that logged in, selected INBOX and answered every NOOP; anything
else -- here the front's per-address cap -- is an error, never a held session.
"""

from __future__ import annotations

import pytest

from tests.cluster.conftest import ALICE, PER_ADDRESS, Cluster
from tests.integration.conftest import PASSWORD
from transcoder.cluster.load import hold_sessions

pytestmark = pytest.mark.integration


def test_sessions_are_held_up_to_the_cap_and_the_rest_are_errors(cluster: Cluster) -> None:
    """Through one front: PER_ADDRESS sessions held with NOOPs answered; two more refused."""
    port = cluster.direct("front1")
    result = hold_sessions(port, ALICE, PASSWORD, PER_ADDRESS + 2, seconds=0.6, interval=0.2)
    assert (result.wanted, result.held, result.errors) == (PER_ADDRESS + 2, PER_ADDRESS, 2)
    assert result.noops >= PER_ADDRESS
    assert all("Too many connections" in failure for failure in result.failures)


def test_a_wrong_password_is_an_error_not_a_held_session(cluster: Cluster) -> None:
    """LOGIN refused: counted as an error with the server's answer."""
    result = hold_sessions(cluster.port, ALICE, "wrong", 1, seconds=0.2, interval=0.1)
    assert (result.held, result.errors) == (0, 1)
    assert "NO" in result.failures[0]
