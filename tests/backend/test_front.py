"""The front before a real Dovecot (issue 11, phase 1): logins, the read path, updates, refusals.

Every check compares what a client sees through the front with what Dovecot
itself answers (imaplib straight to Dovecot), or opens what the front serves
with ``openssl cms -decrypt``.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from imapclient.response_parser import parse_fetch_response

from tests.backend.conftest import USERS
from tests.backend.front import WireClient, direct_login, front_login, running_front
from tests.cms.parties import make_party
from tests.integration.conftest import RunningServer
from tests.integration.transcoding import openssl_decrypt, smime_parts
from transcoder.backend.dovecot import DovecotInstance
from transcoder.client import XKeyClient

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@example.org", "bob@example.org"
PLAIN = (
    b"From: Carol <carol@example.net>\r\nTo: alice@example.org\r\nSubject: plain\r\n\r\nHello.\r\n"
)
MULTIPART = (
    b"From: carol@example.net\r\nSubject: multipart\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n--b1\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAwQFBgcICQ==\r\n--b1--\r\nepilogue\r\n"
)
EIGHT_BIT = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.net>\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"Gr\xc3\xbc\xc3\x9fe \xe2\x80\x94 caf\xc3\xa9\r\n"
)
LARGE = b"Subject: large\r\nMIME-Version: 1.0\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3000
MESSAGES = (PLAIN, MULTIPART, EIGHT_BIT, LARGE)


@pytest.fixture(scope="module")
def front(dovecot: DovecotInstance) -> Iterator[RunningServer]:
    """The front before the module's Dovecot, with alice's INBOX holding :data:`MESSAGES`."""
    for n, message in enumerate(MESSAGES):
        dovecot.drop(ALICE, message, name=f"{1_700_000_000 + n}.M{n}P1.front")
    with running_front(dovecot) as server:
        yield server


def _fetch(imap: imaplib.IMAP4, items: str) -> dict[int, dict[bytes, object]]:
    typ, data = imap.uid("FETCH", "1:*", items)
    assert typ == "OK", data
    parsed = parse_fetch_response(data)
    out = {}
    for uid, values in parsed.items():
        values = {k: v for k, v in values.items() if k != b"SEQ"}
        if b"FLAGS" in values:  # \Recent is each session's own (RFC 3501 section 2.3.2)
            values[b"FLAGS"] = tuple(f for f in values[b"FLAGS"] if f != b"\\Recent")
        out[uid] = values
    return out


def test_policy_off_serves_dovecots_values_byte_for_byte(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """FLAGS UID RFC822.SIZE INTERNALDATE BODY[] ENVELOPE through the front equal Dovecot's own."""
    items = "(FLAGS UID RFC822.SIZE INTERNALDATE BODY.PEEK[] ENVELOPE)"
    through, direct = front_login(front, ALICE), direct_login(dovecot, ALICE)
    try:
        seen_through, seen_direct = _fetch(through, items), _fetch(direct, items)
    finally:
        through.logout()
        direct.logout()
    assert len(seen_direct) >= len(MESSAGES)
    assert seen_through == seen_direct
    bodies = [values[b"BODY[]"] for values in seen_through.values()]
    assert bodies[: len(MESSAGES)] == list(MESSAGES)


def test_a_fetch_by_number_is_relayed_as_dovecot_answers_it(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """FETCH by sequence number (no UID asked): the same octets as Dovecot's, no UID added."""
    command = b"FETCH 1:4 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1]<2.40>)"
    through, direct = _wire_login(front), WireClient(dovecot.port)
    try:
        password = USERS[ALICE].replace("\\", "\\\\").replace('"', '\\"').encode()
        direct.command(b"a", b"LOGIN " + ALICE.encode() + b' "' + password + b'"')
        for client in (through, direct):
            client.command(b"b", b"EXAMINE INBOX")
        answers = [_raw_answer(client, b"c", command) for client in (through, direct)]
    finally:
        through.close()
        direct.close()
    relayed, own = (answer.rpartition(b"c OK ") for answer in answers)
    assert relayed[0] == own[0]
    assert relayed[0].startswith(b"* 1 FETCH (RFC822.SIZE "), relayed[0]
    assert relayed[2] == b"FETCH completed\r\n"


def _raw_answer(client: WireClient, tag: bytes, text: bytes) -> bytes:
    """Send ``tag text``; every octet up to the tagged answer's end (literals with blank lines)."""
    client.send(tag + b" " + text + b"\r\n")
    done = re.compile(rb"(?:\A|\r\n)" + tag + rb" (?:OK|NO|BAD)[^\r]*\r\n\Z")
    data = client.buffer
    while not done.search(data):
        more = client.sock.recv(65536)
        assert more, data
        data += more
    client.buffer = b""
    return data


def test_select_and_status_show_the_backends_mailbox(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """SELECT's UIDVALIDITY/UIDNEXT/EXISTS and STATUS are Dovecot's (MODE OFF: no view epoch)."""
    direct = direct_login(dovecot, ALICE, None)
    through = front_login(front, ALICE, None)
    try:
        query = "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
        values = [imap.status("INBOX", query)[1][0].split(b" ", 1)[1] for imap in (through, direct)]
        assert values[0] == values[1]  # the name is quoted by one and not the other
        through.select("INBOX")
        direct.select("INBOX")
        for code in ("UIDVALIDITY", "UIDNEXT", "EXISTS"):
            assert through.response(code) == direct.response(code)
        typ, listing = through.list()
        assert typ == "OK" and b'(\\HasNoChildren) "/" "Archive"' in listing
    finally:
        through.logout()
        direct.logout()


def test_flags_travel_both_ways(front: RunningServer, dovecot: DovecotInstance) -> None:
    """STORE through the front is in Dovecot; Dovecot's change reaches the front at NOOP."""
    through, direct = front_login(front, ALICE), direct_login(dovecot, ALICE)
    try:
        typ, _ = through.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        assert b"\\Flagged" in direct.uid("FETCH", "1", "(FLAGS)")[1][0]
        direct.uid("STORE", "2", "+FLAGS", "($Label1)")
        typ, _ = through.noop()
        assert typ == "OK"
        updates = through.untagged_responses.get("FETCH", [])
        assert any(re.search(rb"UID 2 FLAGS \(.*\$Label1", line) for line in updates), updates
    finally:
        through.logout()
        direct.logout()


def test_mail_delivered_to_dovecot_shows_up_at_the_front(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """A message dropped into Dovecot is announced (EXISTS) to an IDLEing front client."""
    client = WireClient(front.imap_port)
    try:
        client.command(b"a", b"LOGIN " + ALICE.encode() + b' "' + USERS[ALICE].encode() + b'"')
        selected = client.command(b"b", b"SELECT INBOX")
        exists = [line for line in selected if line.endswith(b" EXISTS")]
        before = int(exists[0].split()[1])
        client.send(b"c IDLE\r\n")
        assert client.line().startswith(b"+")
        dovecot.drop(ALICE, b"Subject: during idle\r\n\r\nnew\r\n")
        lines = client.until(b"* %d EXISTS" % (before + 1), timeout=30)
        assert lines[-1] == b"* %d EXISTS" % (before + 1)
        client.send(b"DONE\r\n")
        assert client.until(b"c ")[-1].startswith(b"c OK")
    finally:
        client.close()


def test_append_stores_plaintext_in_dovecot(front: RunningServer, dovecot: DovecotInstance) -> None:
    """APPEND through the front: Dovecot's APPENDUID, the octets stored as sent (SEARCH finds them).

    For a MODE ALWAYS user too (invariant 4: only FETCH sees the view); a
    missing mailbox is Dovecot's NO [TRYCREATE].
    """
    message = b"Subject: appended\r\n\r\n" + b"needle-in-the-haystack " * 50000 + b"\r\n"
    for user in (ALICE, BOB):
        imap = front_login(front, user, None)
        direct = direct_login(dovecot, user, None)
        try:
            typ, data = imap.append("Archive", "(\\Flagged)", None, message)
            assert typ == "OK", data
            status = direct.status("Archive", "(UIDVALIDITY)")[1][0]
            validity = re.search(rb"UIDVALIDITY (\d+)", status)
            match = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
            assert match is not None and validity is not None, (data, status)
            # As SELECT presents it: Dovecot's own while the account's views never changed.
            assert match.group(1) == validity.group(1) or user == BOB
            uid = match.group(2)
            direct.select("Archive")
            assert direct.uid("SEARCH", "BODY", "needle-in-the-haystack")[1][0].split()[-1] == uid
            stored = direct.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")[1][0]
            assert stored[1] == message and b"\\Flagged" in stored[0]
            typ, data = imap.append("Nowhere", None, None, b"Subject: x\r\n\r\ny\r\n")
            assert typ == "NO" and data[0].startswith(b"[TRYCREATE]"), data
        finally:
            imap.logout()
            direct.logout()


def test_copy_and_move_are_dovecots(front: RunningServer, dovecot: DovecotInstance) -> None:
    """COPY and MOVE through the front: COPYUID from Dovecot, MOVE's EXPUNGE, TRYCREATE."""
    direct = direct_login(dovecot, ALICE, None)
    for name in ("Moving", "Moved"):
        direct.create(name)
    for subject in (b"one", b"two", b"three"):
        dovecot.drop(ALICE, b"Subject: " + subject + b"\r\n\r\nbody\r\n", "Moving")
    client = _wire_login(front)
    try:
        client.command(b"b", b"SELECT Moving")
        validity = direct.status("Moved", "(UIDVALIDITY)")[1][0].split()[-1].rstrip(b")")
        answer = client.command(b"c", b"COPY 1 Moved")[-1]
        assert answer.startswith(b"c OK [COPYUID " + validity + b" 1 1]"), answer
        lines = client.command(b"d", b"UID MOVE 2:3 Moved")
        assert lines[0].startswith(b"* OK [COPYUID " + validity + b" 2:3 2:3]"), lines
        assert lines[1:3] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"], lines
        assert lines[-1].startswith(b"d OK")
        refused = client.command(b"e", b"COPY 1 Nowhere")[-1]
        assert refused.startswith(b"e NO [TRYCREATE]"), refused
        direct.select("Moved")
        fetched = direct.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]
        subjects = [item[1].strip() for item in fetched if isinstance(item, tuple)]
        assert subjects == [b"Subject: one", b"Subject: two", b"Subject: three"]
        assert direct.select("Moving")[1] == [b"1"]
    finally:
        client.close()
        direct.logout()


def test_mode_always_user_gets_smime_that_openssl_opens(
    front: RunningServer, dovecot: DovecotInstance, tmp_path: Path
) -> None:
    """bob provisions a certificate through XKEY: Dovecot's mail reaches him as S/MIME."""
    dovecot.drop(BOB, PLAIN)
    party = make_party(tmp_path, "bob", rsa.generate_private_key(65537, 2048))
    imap = front_login(front, BOB, None)
    try:
        xkey = XKeyClient(imap)
        assert xkey.provision(party.cert_der) is not None
        xkey.set_policy(mode="ALWAYS", format="SMIME")
    finally:
        imap.logout()
    imap = front_login(front, BOB)
    direct = direct_login(dovecot, BOB)
    try:
        # The views changed: the front presents a new, greater UIDVALIDITY (invariant 9);
        # Dovecot's own stays as it was.
        presented = int(imap.response("UIDVALIDITY")[1][0])
        stored = int(direct.response("UIDVALIDITY")[1][0])
        assert presented > stored
        direct.logout()
        typ, data = imap.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK", data
        view = data[0][1]
        size = int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1))
    finally:
        imap.logout()
    assert size == len(view)
    smime_parts(view)
    assert b"Hello." not in view
    inner = openssl_decrypt(view, party, tmp_path)
    assert b"Hello." in inner and b"Subject: plain" in inner
    direct = direct_login(dovecot, BOB)
    try:  # the mail at rest is Dovecot's, untouched
        assert direct.uid("FETCH", "1", "(BODY.PEEK[])")[1][0][1] == PLAIN
    finally:
        direct.logout()


def test_a_backend_stopped_mid_session_ends_the_session_with_bye(tmp_path: Path) -> None:
    """Dovecot stops: the client is told * BYE [UNAVAILABLE] and the connection closes."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    instance = DovecotInstance(directory / "dovecot", dict(USERS))
    try:
        with instance, running_front(instance) as server:
            client = WireClient(server.imap_port)
            client.command(b"a", b"LOGIN " + ALICE.encode() + b' "' + USERS[ALICE].encode() + b'"')
            client.command(b"b", b"SELECT INBOX")
            started = time.monotonic()
            os.kill(instance.pid, signal.SIGTERM)  # stop() waits for it at the end
            line = client.line(timeout=30)
            assert line.startswith(b"* BYE [UNAVAILABLE]"), line
            assert client.line(timeout=10) == b""  # closed
            assert time.monotonic() - started < 30
            client.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _wire_login(server: RunningServer, user: str = ALICE) -> WireClient:
    client = WireClient(server.imap_port)
    password = USERS[user].replace("\\", "\\\\").replace('"', '\\"')
    answer = client.command(b"a", b"LOGIN " + user.encode() + b' "' + password.encode() + b'"')
    assert answer[-1].startswith(b"a OK"), answer
    return client


def test_hierarchy_commands_are_carried_to_dovecot(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """CREATE, RENAME, SUBSCRIBE and DELETE through the front change Dovecot's mailboxes."""
    client = _wire_login(front)
    direct = direct_login(dovecot, ALICE, None)
    try:
        assert client.command(b"b", b"CREATE Projects/2026")[-1].startswith(b"b OK")
        assert client.command(b"c", b'RENAME "Projects/2026" "Projects/Done"')[-1].startswith(
            b"c OK"
        )
        assert client.command(b"d", b"SUBSCRIBE Projects/Done")[-1].startswith(b"d OK")
        assert b'"/" Projects/Done' in b" ".join(direct.lsub()[1])
        assert b'"/" Projects/Done' in b" ".join(direct.list()[1])
        refused = client.command(b"e", b"CREATE Projects/Done")[-1]
        assert refused.startswith(b"e NO [ALREADYEXISTS]"), refused
        assert client.command(b"f", b"DELETE Projects/Done")[-1].startswith(b"f OK")
        assert b"Projects/Done" not in b" ".join(direct.list()[1])
    finally:
        client.close()
        direct.logout()


def test_an_expunge_in_dovecot_waits_for_a_point_where_it_may_be_sent(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """Expunged directly in Dovecot: no EXPUNGE during FETCH (RFC 3501 7.4.1); NOOP sends it."""
    direct = direct_login(dovecot, ALICE, None)
    direct.create("Shrinking")
    for n in range(3):
        dovecot.drop(ALICE, b"Subject: %d\r\n\r\nbody\r\n" % n, "Shrinking")
    client = _wire_login(front)
    try:
        client.command(b"b", b"SELECT Shrinking")
        direct.select("Shrinking")
        direct.store("1", "+FLAGS", "(\\Deleted)")
        direct.expunge()
        lines = client.command(b"c", b"FETCH 1:3 (FLAGS)")
        assert not any(line.endswith(b"EXPUNGE") for line in lines), lines
        # The client's numbers, whichever RFC 2180 answer Dovecot gives for the expunged
        # message (4.1.1: its last known flags, as it does for a policy-OFF FETCH relayed
        # while its session still shows it; 4.1.2: left out).
        numbers = [
            line.split()[1] for line in lines if line.startswith(b"* ") and b" FETCH " in line
        ]
        assert numbers in ([b"2", b"3"], [b"1", b"2", b"3"]), lines
        # Relayed from Dovecot (its 2 since the EXPUNGE), numbered as the client's 3.
        answer = _raw_answer(client, b"r", b"FETCH 3 (BODY.PEEK[HEADER])")
        assert answer.startswith(b"* 3 FETCH (BODY[HEADER] {14}\r\nSubject: 2\r\n\r\n)"), answer
        # Until the EXPUNGE is told, the client's numbers are its snapshot's (RFC 3501 7.4.1):
        # its 2 is UID 2 (Dovecot's 1), its 3 UID 3 (Dovecot's 2); its 1 is gone.
        assert client.command(b"s", b"SEARCH 2")[0] == b"* SEARCH 2"
        assert client.command(b"s", b"SEARCH 1")[0] == b"* SEARCH"
        assert client.command(b"s", b"SEARCH 2:* SUBJECT 2")[0] == b"* SEARCH 3"
        assert client.command(b"s", b"SEARCH OR 1 (NOT 2:3)")[0] == b"* SEARCH"
        assert client.command(b"s", b"SEARCH NOT 3")[0] == b"* SEARCH 2"
        assert client.command(b"s", b'SEARCH 1:3 SUBJECT "1"')[0] == b"* SEARCH 2"
        # UID SEARCH tells the EXPUNGE (RFC 3501 7.4.1 allows it): then the numbers shift.
        lines = client.command(b"s", b"UID SEARCH 3 UID 1:*")
        assert lines[:2] == [b"* SEARCH 3", b"* 1 EXPUNGE"], lines
        assert client.command(b"s", b'SEARCH 1:3 SUBJECT "1"')[0] == b"* SEARCH 1"
        assert client.command(b"d", b"NOOP") == [b"d OK NOOP completed"]
        assert client.command(b"t", b"SEARCH 2")[0] == b"* SEARCH 2"
        lines = client.command(b"e", b"FETCH 1:* (UID)")
        assert [line for line in lines if line.startswith(b"* ")] == [
            b"* 1 FETCH (UID 2)",
            b"* 2 FETCH (UID 3)",
        ]
    finally:
        client.close()
        direct.logout()


def test_authenticate_plain_is_checked_by_the_backend(front: RunningServer) -> None:
    """AUTHENTICATE PLAIN (RFC 4616, SASL-IR) logs in with the backend's password."""
    import base64

    client = WireClient(front.imap_port)
    try:
        good = base64.b64encode(b"\0" + BOB.encode() + b"\0" + USERS[BOB].encode())
        answer = client.command(b"a", b"AUTHENTICATE PLAIN " + good)[-1]
        assert answer.startswith(b"a OK"), answer
        assert client.command(b"b", b"SELECT INBOX")[-1].startswith(b"b OK")
    finally:
        client.close()


def test_search_answers_sequence_numbers_or_uids(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """Where sequence numbers and UIDs differ, SEARCH answers the one, UID SEARCH the other."""
    direct = direct_login(dovecot, ALICE, None)
    direct.create("Searching")
    for subject in (b"gone", b"kept", b"wanted"):
        dovecot.drop(ALICE, b"Subject: " + subject + b"\r\n\r\nbody\r\n", "Searching")
    direct.select("Searching")
    direct.store("1", "+FLAGS", "(\\Deleted)")
    direct.expunge()
    direct.logout()
    client = _wire_login(front)
    try:
        client.command(b"b", b"SELECT Searching")
        assert client.command(b"c", b"SEARCH SUBJECT wanted")[0] == b"* SEARCH 2"
        assert client.command(b"d", b"UID SEARCH SUBJECT wanted")[0] == b"* SEARCH 3"
        assert client.command(b"e", b"SEARCH 1")[0] == b"* SEARCH 1"
    finally:
        client.close()


def test_search_is_evaluated_by_dovecot_on_the_plaintext(front: RunningServer) -> None:
    """SEARCH BODY/SUBJECT (a literal too) through the front: Dovecot's answer, our numbers."""
    client = _wire_login(front)
    try:
        client.command(b"b", b"SELECT INBOX")
        lines = client.command(b"c", b'SEARCH BODY "first part"')
        assert lines[0] == b"* SEARCH 2", lines
        client.send(b"d UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n")
        assert client.line().startswith(b"+")
        client.send(b"large UNDELETED\r\n")
        lines = client.until(b"d ")
        assert lines[0] == b"* SEARCH 4", lines
        assert lines[-1].startswith(b"d OK")
        lines = client.command(b"e", b"SEARCH 1:2 NOT SUBJECT plain")
        assert lines[0] == b"* SEARCH 2", lines
        refused = client.command(b"f", b"SEARCH CHARSET KOI8-R ALL")[-1]
        assert refused.startswith(b"f NO [BADCHARSET"), refused
        refused = client.command(b"g", b"SEARCH FROBNICATE")[-1]
        assert refused.startswith(b"g BAD"), refused
    finally:
        client.close()


def test_an_imaps_backend_is_verified_against_backend_ca(tmp_path: Path) -> None:
    """--backend imaps:// with the backend's CA serves mail; with another CA logins get
    NO [UNAVAILABLE] and the refusal is logged."""
    import shutil
    import tempfile

    from tests.backend.tlsfiles import make_ca, make_server_files

    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    ca, cert, key = make_server_files(directory)
    other, _, _ = make_ca(directory, "someone-else")
    instance = DovecotInstance(directory / "dovecot", dict(USERS), tls=(cert, key))
    instance.prepare()
    instance.drop(ALICE, PLAIN)
    try:
        with instance:
            url = f"imaps://localhost:{instance.tls_port}"
            with running_front(instance, "--backend-ca", str(ca), backend_url=url) as server:
                imap = front_login(server, ALICE)
                try:
                    assert imap.uid("FETCH", "1", "(BODY.PEEK[])")[1][0][1] == PLAIN
                finally:
                    imap.logout()
            with running_front(instance, "--backend-ca", str(other), backend_url=url) as server:
                imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=60)
                with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
                    imap.login(ALICE, USERS[ALICE])
                imap.shutdown()
                assert "TLS verification failed" in server.log.read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_two_front_sessions_see_each_others_changes(front: RunningServer) -> None:
    """Two clients of one account at the front (two backend connections): a flag one sets
    reaches the other as FETCH FLAGS at its next NOOP."""
    first, second = _wire_login(front), _wire_login(front)
    try:
        for client in (first, second):
            client.command(b"b", b"SELECT INBOX")
        assert first.command(b"c", b"UID STORE 3 +FLAGS.SILENT ($Shared)")[-1].startswith(b"c OK")
        lines = second.command(b"d", b"NOOP")
        assert any(b"FETCH (UID 3 FLAGS (" in line and b"$Shared" in line for line in lines), lines
    finally:
        first.close()
        second.close()


def test_views_are_byte_stable_across_a_restart_of_the_front(
    dovecot: DovecotInstance, tmp_path: Path
) -> None:
    """A MODE ALWAYS view: the same octets after the front restarts; <o.n> slices and
    RFC822.SIZE describe those octets (invariants 1 and 2)."""
    dovecot.drop(BOB, MULTIPART, "Archive")
    party = make_party(tmp_path, "bob", rsa.generate_private_key(65537, 2048))
    with running_front(dovecot) as server:
        imap = front_login(server, BOB, None)
        try:
            xkey = XKeyClient(imap)
            assert xkey.provision(party.cert_der) is not None
            xkey.set_policy(mode="ALWAYS", format="SMIME")
        finally:
            imap.logout()

        def fetch_view() -> tuple[bytes, int, bytes]:
            imap = front_login(server, BOB, "Archive")
            try:
                # The newest message: the one dropped above.
                typ, data = imap.fetch("*", "(RFC822.SIZE BODY.PEEK[])")
                assert typ == "OK", data
                size = int(re.search(rb"RFC822.SIZE (\d+)", data[0][0]).group(1))
                typ, part = imap.fetch("*", "(BODY.PEEK[]<100.200>)")
                assert typ == "OK", part
                return data[0][1], size, part[0][1]
            finally:
                imap.logout()

        view, size, slice_ = fetch_view()
        server.restart()
        again, size_again, slice_again = fetch_view()
    assert view == again and size == size_again == len(view)
    assert slice_ == slice_again == view[100:300]
    assert b"first part" in openssl_decrypt(view, party, tmp_path)


def test_a_backend_lost_in_the_middle_of_a_relayed_literal_aborts_the_client() -> None:
    """Dovecot killed while a large BODY[] is relayed: the connection ends, the literal is
    short, and neither a tagged answer nor a BYE is written inside it."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="transcoder-dovecot-"))
    instance = DovecotInstance(directory / "dovecot", dict(USERS))
    size = 40_000_000
    try:
        with instance, running_front(instance) as server:
            instance.drop(ALICE, b"Subject: big\r\n\r\n" + b"y" * (size - 16) + b"\r\n")
            client = _wire_login(server)
            client.command(b"b", b"SELECT INBOX")
            client.send(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
            head = client.line()
            assert head.endswith(b"{%d}" % (size + 2)), head
            received = len(client.buffer)
            # The front holds back while the client reads nothing: Dovecot's imap process is
            # mid-send.  Killed, it leaves the front a literal it cannot complete.
            for pid in _children(instance.pid, "imap"):
                os.kill(pid, signal.SIGKILL)
            client.sock.settimeout(30)
            rest = bytearray(client.buffer)
            with contextlib.suppress(ConnectionResetError):  # aborted: a reset may end it
                while chunk := client.sock.recv(1 << 20):
                    rest += chunk
            client.close()
            assert received + len(rest) - len(client.buffer) < size
            assert b"c OK" not in rest and b"* BYE" not in rest
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _children(parent: int, name: str) -> list[int]:
    """The pids of ``parent``'s child processes named ``name`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and comm == name:
            found.append(int(entry.name))
    return found


def test_a_relayed_body_fetch_sets_seen_once(
    front: RunningServer, dovecot: DovecotInstance
) -> None:
    """Non-PEEK BODY[] relayed: \\Seen set in Dovecot and told in the FETCH, not again at NOOP."""
    message = b"Subject: to be read\r\n\r\nbody\r\n"
    direct = direct_login(dovecot, ALICE, None)
    direct.create("Reading")
    dovecot.drop(ALICE, message, "Reading")
    client = _wire_login(front)
    try:
        client.command(b"b", b"SELECT Reading")
        answer = _raw_answer(client, b"c", b"UID FETCH 1 (BODY[])")
        assert answer.startswith(b"* 1 FETCH (UID 1 "), answer
        assert b"\\Seen" in answer and message in answer
        direct.select("Reading")
        assert b"\\Seen" in direct.uid("FETCH", "1", "(FLAGS)")[1][0]
        assert client.command(b"d", b"NOOP") == [b"d OK NOOP completed"]
    finally:
        client.close()
        direct.logout()
