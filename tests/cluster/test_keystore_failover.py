"""PostgreSQL failover under a running front: a hot standby promoted, the keys kept.

The keystore's availability is PostgreSQL's: a hoster runs a primary and a
streaming standby and gives the fronts a multi-host URI
(``postgresql://USER@PRIMARY:PORT,STANDBY:PORT/DB?target_session_attrs=read-write``,
libpq's own failover addressing).  Real PostgreSQL servers -- a primary and
a standby made by ``pg_basebackup -R``, both started and stopped by PID --
and a real ``twistd transcoder`` front:

* while the primary is gone and the standby not yet promoted, the front
  fails closed (FETCH under MODE ALWAYS is NO, never plaintext);
* once the standby is promoted, the same front, untouched, serves the view
  to the key stored before the failover (``openssl cms -decrypt`` opens it),
  and a change made with ``transcoder-admin`` on the new primary reaches a
  session of the front (its change listener found the new primary too).
"""

from __future__ import annotations

import imaplib
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from tests.cms.parties import make_party
from tests.integration.conftest import admin
from tests.integration.test_shared_keystore import (
    ALICE,
    MARKER,
    eventually,
    fetch_fails_closed,
    first_uid,
    fresh_view,
    start_fronts,
)
from tests.integration.transcoding import SMIME, login, openssl_decrypt, provision
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_a_promoted_standby_serves_the_keys_and_the_front_follows(tmp_path: Path) -> None:
    """Primary stopped: FETCH is NO, no plaintext; standby promoted: the same front serves
    the view to the key stored before, and an admin change on the new primary ends a
    stale session."""
    party = make_party(tmp_path, "alice", rsa.generate_private_key(65537, 2048))
    with ExitStack() as stack:
        primary = PostgresServer()
        stack.callback(primary.remove)
        primary.start()
        database = primary.new_database().rsplit("/", 1)[1]
        standby = PostgresServer.standby_of(primary)
        stack.callback(standby.remove)
        standby.start()
        dsn = (
            f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
            f"/{database}?target_session_attrs=read-write"
        )
        (front,) = start_fronts(tmp_path, dsn, 1, stack)
        provision(front, ALICE, party.cert.public_bytes(Encoding.DER), SMIME)
        assert MARKER in openssl_decrypt(fresh_view(front), party, tmp_path)

        session = login(front, ALICE)
        uid = first_uid(session)
        primary.stop()
        fetch_fails_closed(session, uid)

        standby.promote()
        view = eventually(lambda: fresh_view(front), timeout=60)
        assert MARKER in openssl_decrypt(view, party, tmp_path)

        watcher = login(front, ALICE)
        done = admin(front.data, "--keystore", dsn, "policy", ALICE, "--mode", "off")
        assert done.returncode == 0 and "MODE OFF" in done.stdout, done.stderr

        def ended() -> None:
            try:
                watcher.noop()
            except imaplib.IMAP4.abort as bye:
                assert "UNAVAILABLE" in str(bye), bye
                return
            raise AssertionError("the stale session goes on")

        eventually(ended, timeout=30)
        assert MARKER in fresh_view(front)  # MODE OFF, counted on the new primary
