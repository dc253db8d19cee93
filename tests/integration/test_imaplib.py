"""The standalone server driven end to end by Python's stdlib imaplib."""

from __future__ import annotations

import imaplib
import re
import ssl
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, RunningServer, admin
from tests.integration.messages import MULTIPART, SIMPLE

pytestmark = pytest.mark.integration


def tls_context() -> ssl.SSLContext:
    """Trust the server's generated self-signed certificate, as a configured client would."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(server: RunningServer, user: str = "alice@example.org") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.starttls(ssl_context=tls_context())
    client.login(user, PASSWORD)
    return client


def uid_of(response: bytes) -> int:
    match = re.search(rb"UID (\d+)", response)
    assert match, response
    return int(match.group(1))


def test_starttls_login_append_fetch(server: RunningServer) -> None:
    """STARTTLS, LOGIN, APPEND then FETCH BODY[] returns the appended octets exactly."""
    client = login(server)
    typ, data = client.append("INBOX", None, None, SIMPLE)
    assert typ == "OK", data
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = client.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
    assert typ == "OK"
    assert data[0][1] == SIMPLE
    assert b"RFC822.SIZE %d" % len(SIMPLE) in data[0][0] + data[1]
    client.logout()


def test_implicit_tls_port(server: RunningServer) -> None:
    """The imaps port speaks TLS from the first octet and accepts LOGIN."""
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", server.imaps_port, ssl_context=tls_context(), timeout=30
    )
    typ, _ = client.login("alice@example.org", PASSWORD)
    assert typ == "OK"
    client.logout()


def test_wrong_password_is_refused(server: RunningServer) -> None:
    """A wrong password gets a NO carrying AUTHENTICATIONFAILED."""
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    client.starttls(ssl_context=tls_context())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice@example.org", "wrong")


def test_fetch_forms(server: RunningServer) -> None:
    """Sections, partials, BODYSTRUCTURE and ENVELOPE describe the stored octets."""
    client = login(server)
    client.append("INBOX", None, None, MULTIPART)
    client.select("INBOX")
    header_end = MULTIPART.index(b"\r\n\r\n") + 4
    _, data = client.fetch("1", "(BODY.PEEK[HEADER])")
    assert data[0][1] == MULTIPART[:header_end]
    _, data = client.fetch("1", "(BODY.PEEK[TEXT])")
    assert data[0][1] == MULTIPART[header_end:]
    _, data = client.fetch("1", "(BODY.PEEK[1])")
    assert data[0][1] == b"See attached."
    _, data = client.fetch("1", "(BODY.PEEK[2.MIME])")
    assert data[0][1].startswith(b"Content-Type: application/octet-stream")
    _, data = client.fetch("1", "(BODY.PEEK[]<10.25>)")
    assert b"BODY[]<10> {25}" in data[0][0]
    assert data[0][1] == MULTIPART[10:35]
    _, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: Holiday photos\r\n\r\n"
    _, data = client.fetch("1", "(BODYSTRUCTURE ENVELOPE)")
    assert b'"boundary" "=_MiXeD_CaSe"' in data[0]
    assert b'"Holiday photos"' in data[0]
    client.logout()


def test_partial_chunks_reassemble(server: RunningServer) -> None:
    """Chunked partial fetches reassemble to BODY[] exactly."""
    client = login(server)
    client.append("INBOX", None, None, MULTIPART)
    client.select("INBOX")
    chunks = []
    for origin in range(0, len(MULTIPART), 100):
        _, data = client.fetch("1", f"(BODY.PEEK[]<{origin}.100>)")
        chunks.append(data[0][1])
    assert b"".join(chunks) == MULTIPART
    client.logout()


def test_body_fetch_sets_seen(server: RunningServer) -> None:
    """A non-PEEK BODY[] fetch sets \\Seen and reports it; PEEK does not."""
    client = login(server)
    client.append("INBOX", None, None, SIMPLE)
    client.select("INBOX")
    _, data = client.fetch("1", "(BODY.PEEK[])")
    _, flags = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in flags[0]
    _, data = client.fetch("1", "(BODY[])")
    assert b"\\Seen" in data[0][0] or any(b"\\Seen" in d for d in data if isinstance(d, bytes))
    _, flags = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in flags[0]
    client.logout()


def test_store_search_copy_expunge(server: RunningServer) -> None:
    """STORE, SEARCH by header and flag, COPY and EXPUNGE work on the stored messages."""
    client = login(server)
    client.append("INBOX", None, None, SIMPLE)
    client.append("INBOX", None, None, MULTIPART)
    client.select("INBOX")
    assert client.search(None, "FROM", '"Alice"') == ("OK", [b"1"])
    assert client.search(None, "SUBJECT", '"holiday"') == ("OK", [b"2"])
    assert client.search(None, "TO", "bob@example.org") == ("OK", [b"1"])
    assert client.search(None, "BODY", '"numbers are in"') == ("OK", [b"1"])
    typ, _ = client.store("1", "+FLAGS", "(\\Flagged)")
    assert typ == "OK"
    assert client.search(None, "FLAGGED") == ("OK", [b"1"])
    typ, data = client.copy("1:2", "Archive")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    assert client.create("Archive")[0] == "OK"
    assert client.copy("1:2", "Archive")[0] == "OK"
    client.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = client.expunge()
    assert typ == "OK" and data == [b"1"]
    _, data = client.select("Archive")
    assert data == [b"2"]
    _, data = client.fetch("2", "(BODY.PEEK[])")
    assert data[0][1] == MULTIPART
    client.logout()


def test_restart_keeps_mail_uids_and_flags(server: RunningServer) -> None:
    """After a restart the same UIDs, UIDVALIDITY, flags and octets are served."""
    client = login(server)
    client.append("INBOX", "(\\Flagged)", None, SIMPLE)
    client.select("INBOX")
    before_validity = client.response("UIDVALIDITY")[1]
    _, before = client.fetch("1", "(UID FLAGS BODY.PEEK[])")
    client.logout()
    server.restart()
    client = login(server)
    client.select("INBOX")
    assert client.response("UIDVALIDITY")[1] == before_validity
    _, after = client.fetch("1", "(UID FLAGS BODY.PEEK[])")
    assert after[0][1] == SIMPLE
    assert uid_of(after[0][0]) == uid_of(before[0][0])
    assert b"\\Flagged" in after[0][0]
    client.logout()


def test_admin_deliver_appears_at_noop(server: RunningServer) -> None:
    """A message delivered by transcoder-admin while a client is selected shows up at NOOP."""
    client = login(server)
    client.select("INBOX")
    result = admin(server.data, "deliver", "alice@example.org", stdin=SIMPLE.decode())
    assert result.returncode == 0, result.stderr
    client.noop()
    assert client.response("EXISTS")[1][-1] == b"1"  # NOOP reported the new message
    _, data = client.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == SIMPLE
    client.logout()


def test_mda_drop_into_new_with_lf_endings(server: RunningServer) -> None:
    """A file an MDA drops into new/ with bare LF is served with CRLF and a fresh UID."""
    maildir = server.data / "mail" / "alice@example.org"
    lf_message = SIMPLE.replace(b"\r\n", b"\n")
    tmp = maildir / "tmp" / "1700000000.M1P1.mda"
    tmp.write_bytes(lf_message)
    tmp.rename(maildir / "new" / "1700000000.M1P1.mda")
    client = login(server)
    _, data = client.select("INBOX")
    assert data == [b"1"]
    _, data = client.fetch("1", "(UID RFC822.SIZE BODY.PEEK[])")
    assert data[0][1] == SIMPLE
    assert b"RFC822.SIZE %d" % len(SIMPLE) in data[0][0] + data[1]
    client.logout()


def test_accounts_are_isolated(server: RunningServer) -> None:
    """Bob does not see Alice's mail."""
    alice = login(server)
    alice.append("INBOX", None, None, SIMPLE)
    alice.logout()
    bob = login(server, "bob@example.org")
    _, data = bob.select("INBOX")
    assert data == [b"0"]
    bob.logout()


def test_first_start_creates_layout(server: RunningServer) -> None:
    """The data directory holds the accounts file, mail and a generated certificate."""
    data: Path = server.data
    assert (data / "accounts").stat().st_mode & 0o077 == 0
    assert (data / "tls" / "server.crt").exists()
    assert (data / "tls" / "server.key").stat().st_mode & 0o077 == 0
