"""The transcoding invariants suite (issues 4-5, 9) run against the front before Dovecot.

Every test of :mod:`tests.integration.test_transcoded_invariants` -- policy OFF
serves the stored octets, switching policy, fail closed, ciphertext passed
through, header protection, --obscure-subject... -- runs here unchanged; for
this module only, the suite's ``running_server`` starts a Dovecot holding the
accounts and a front (``--backend``) before it, with the same extra options.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

import tests.integration.test_transcoded_invariants as suite
from tests.backend.front import running_front
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.test_transcoded_invariants import *  # noqa: F403  (the tests, fixtures)
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration


@contextmanager
def front_server(
    root: Path, accounts: Sequence[str], extra_args: Sequence[str] = ()
) -> Iterator[RunningServer]:
    """``running_server``'s contract, served by a front before a Dovecot with ``accounts``."""
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    dovecot = DovecotInstance(directory / "dovecot", dict.fromkeys(accounts, PASSWORD))
    try:
        with dovecot, running_front(dovecot, *extra_args) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _through_the_front() -> Iterator[None]:
    """This module's servers are fronts before Dovecot (the suite's own module is untouched)."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(suite, "running_server", front_server)
        yield
