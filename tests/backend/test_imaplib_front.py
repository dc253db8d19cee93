"""The imaplib and imapclient end-to-end suites and the pipelining test, run against the front.

The tests of :mod:`tests.integration.test_imaplib`,
:mod:`tests.integration.test_imapclient` and
:mod:`tests.integration.test_pipelining` run here unchanged, their ``server``
a front before a Dovecot holding alice and bob -- except the two about the
built-in store's own delivery (``transcoder-admin deliver``, files dropped
into its Maildir), whose front counterpart is
``test_front.py::test_mail_delivered_to_dovecot_shows_up_at_the_front``, and
one whose mailbox name Dovecot's Maildir++ layout refuses (below).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.front import running_front
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.test_imapclient import *  # noqa: F403  (the tests)
from tests.integration.test_imaplib import *  # noqa: F403  (the tests)
from tests.integration.test_pipelining import *  # noqa: F403  (the test)
from transcoder.backend.dovecot import DovecotInstance

pytestmark = pytest.mark.integration

# The built-in store's delivery paths: nothing of theirs goes through a front.
del test_admin_deliver_appears_at_noop  # noqa: F821
del test_mda_drop_into_new_with_lf_endings  # noqa: F821
# It creates a mailbox whose name holds ".", which Dovecot's Maildir++ layout refuses
# (NO [CANNOT], passed on as it is); its MOVE and SEARCH are pinned in test_front.py.
del test_append_fetch_search_move  # noqa: F821


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A front before a fresh Dovecot with alice@example.org and bob@example.org."""
    if not DovecotInstance.installed():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd)")
    accounts = ("alice@example.org", "bob@example.org")
    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    dovecot = DovecotInstance(directory / "dovecot", dict.fromkeys(accounts, PASSWORD))
    try:
        with dovecot, running_front(dovecot) as front:
            yield front
    finally:
        shutil.rmtree(directory, ignore_errors=True)
