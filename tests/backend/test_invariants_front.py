"""The transcoding invariants suite (issues 4-5, 9) run against the front before Dovecot.

Every test of :mod:`tests.integration.test_transcoded_invariants` -- policy OFF
serves the stored octets, switching policy, fail closed, ciphertext passed
through, header protection, --obscure-subject... -- runs here unchanged; for
this module only, the suite's ``running_server`` starts a Dovecot holding the
accounts and a front (``--backend``) before it, with the same extra options.
"""

from __future__ import annotations

import imaplib

import pytest

import tests.integration.test_transcoded_invariants as suite
from tests.backend.front import FrontServer, rerun_through_front
from tests.integration.conftest import PASSWORD, RunningServer
from tests.integration.messages import MULTIPART, SIMPLE
from tests.integration.test_transcoded_invariants import *  # noqa: F403  (the tests, fixtures)
from tests.integration.test_transcoded_invariants import CAROL, login, set_mode
from tests.integration.transcoding import append, fetch, fetch_body, fetch_parsed

pytestmark = pytest.mark.integration


_through_the_front = rerun_through_front(suite)


def test_policy_off_serves_the_stored_octets(inv_server: RunningServer) -> None:
    """Under MODE OFF, BODY[], sections, RFC822.SIZE and BODYSTRUCTURE are Dovecot's own.

    Replaces the suite's test of that name for the front: issue 11 wants a
    policy-OFF user's non-content items as the backend answered them, and
    Dovecot counts the lines of a text part without a final line end as 0
    where the built-in store counts 1 (both read RFC 3501's "size of the body
    in text lines" their own way).
    """
    assert isinstance(inv_server, FrontServer)
    port = int(inv_server.backend[1].rsplit(":", 1)[1])
    set_mode(inv_server, CAROL, "OFF")
    imap = login(inv_server, CAROL)
    direct = imaplib.IMAP4("127.0.0.1", port, timeout=60)
    direct.login(CAROL, PASSWORD)
    direct.select("INBOX")
    try:
        for stored in (SIMPLE, MULTIPART):
            uid = append(imap, stored)
            direct.noop()  # Dovecot's own session learns of the new message
            assert fetch_body(imap, uid) == stored
            assert fetch_body(imap, uid, "TEXT") == stored.partition(b"\r\n\r\n")[2]
            items = "(RFC822.SIZE BODYSTRUCTURE)"
            parsed = fetch_parsed(imap, uid, items)
            assert parsed[b"RFC822.SIZE"] == len(stored)
            assert parsed == fetch_parsed(direct, uid, items)
            assert fetch(
                imap, uid, "(BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (Subject)]<0.9>)"
            ) == (fetch(direct, uid, "(BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (Subject)]<0.9>)"))
    finally:
        imap.logout()
        direct.logout()
