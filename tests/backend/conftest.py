"""A real Dovecot behind the front (issue 11): Debian's dovecot-imapd, unprivileged, on loopback.

``dovecot`` is one :class:`~transcoder.backend.dovecot.DovecotInstance` per
test module (its own configuration, passwd-file and Maildirs in a temporary
directory, stopped by its PID after the module), with the two accounts of
:data:`USERS`.  Tests deliver mail with ``dovecot.drop`` (into ``new/``, as an
MDA does) and read Dovecot directly with ``imaplib`` to compare.  Without
Dovecot installed the tests skip, which under ``CI=true`` fails the run
(``.ci/run`` installs ``dovecot-imapd``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD
from transcoder.backend.dovecot import DovecotInstance

#: The backend's accounts: address -> password.
USERS = {"alice@example.org": PASSWORD, "bob@example.org": 'bob "pass\\word'}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotInstance]:
    """A running Dovecot with :data:`USERS` (INBOX and Archive each), stopped after the module."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    # Not below pytest's 0700 base temp: as root the mail is read as nobody.
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    instance = DovecotInstance(directory / "dovecot", dict(USERS))
    instance.prepare(["Archive", "Batch"])
    try:
        with instance:
            yield instance
    finally:
        shutil.rmtree(directory, ignore_errors=True)
