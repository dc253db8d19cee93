"""CONVERSIONS, CONVERT and UID CONVERT on the wire (RFC 5259), its examples adapted.

Each test drives a real TranscodingIMAP4Server over a Maildir and a SQLite
keystore (tests/imap/convert_support.py); converted S/MIME parts are opened
with ``openssl cms -decrypt``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.convert.support import LATIN1_TEXT, MESSAGE, SECRET, UTF8_TEXT, openssl_open, part_entity
from tests.imap.convert_support import another_session, converting_session, literal, run, tagged
from tests.transcoders.smime_keys import identity
from transcoder.keys.keystore import KeyStore

WHO = identity("rsa2048")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    with KeyStore(tmp_path / "keys.db") as keystore:
        yield keystore


def test_convert_is_advertised(tmp_path: Path, store: KeyStore) -> None:
    """CAPABILITY lists CONVERT beside BINARY (RFC 5259 section 3.1)."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"c", b"CAPABILITY")
    assert b" CONVERT" in out and b" BINARY" in out


def test_conversions_lists_text_plain_with_its_mandatory_parameters(
    tmp_path: Path, store: KeyStore
) -> None:
    """Section 7.1: text/plain to text/plain with "charset" and "unknown-character-replacement";
    no encryption target for a user without keys."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"a", b'CONVERSIONS "text/plain" "text/plain"')
    assert out.startswith(
        b'* CONVERSION "text/plain" "text/plain" ("charset" "unknown-character-replacement")\r\n'
    )
    everything = run(session, b"b", b'CONVERSIONS "*" "*"')
    assert b"pkcs7-mime" not in everything and b"multipart/encrypted" not in everything


def test_conversions_lists_the_encryption_target_for_a_user_with_a_certificate(
    tmp_path: Path, store: KeyStore
) -> None:
    """With an S/MIME key: any source converts to application/pkcs7-mime, cipher selectable."""
    session = converting_session(tmp_path, store, MESSAGE, cert_der=WHO.cert_der)
    out = run(session, b"a", b'CONVERSIONS "image/png" "application/*"')
    assert out.splitlines()[0] == (
        b'* CONVERSION "image/png" "application/pkcs7-mime" ("smime-cipher")'
    )
    assert b"multipart/encrypted" not in run(session, b"b", b'CONVERSIONS "*" "*"')


@pytest.mark.parametrize(
    "line",
    [
        b"CONVERSIONS",
        b'CONVERSIONS "text/plain"',
        b'CONVERSIONS "text" "*"',
        b'CONVERSIONS "*/plain" "*"',
        b'CONVERSIONS "*" "*" extra',
        b'CONVERT 1 ("text/plain") BINARY[1',
        b'CONVERT 1 ("text/plain" BINARY[1]',
        b"CONVERT 1 (text) BINARY[1]",
        b'CONVERT 1 ("text/plain") BINARY[0]',
        b'CONVERT 1 ("text/plain") BINARY[1]<5>',
        b'CONVERT 1 ("text/plain") BODY[1]',
        b'CONVERT 1 ("text/plain") BODY[HEADER]',
        b"CONVERT 1 (NIL) BODY[MIME]",
        b'CONVERT 1 ("text/plain" ("charset")) BINARY[1]',
        b'CONVERT 1 ("text/plain" ("charset" "a" "charset" "b")) BINARY[1]',
        b'CONVERT 1 ("text/plain" ("charset" {5}) BINARY[1]',
        b'CONVERT 1 ("text/plain") (BINARY[1] FLAGS)',
        b'CONVERT 1 ("text/plain") ()',
        b'CONVERT x ("text/plain") BINARY[1]',
        b'CONVERT 1 ("text/plain") BINARY[1] trailing',
    ],
)
def test_malformed_commands_are_bad_with_a_code(
    tmp_path: Path, store: KeyStore, line: bytes
) -> None:
    """Every malformed CONVERSIONS or CONVERT is BAD [CLIENTBUG], never NO or a crash."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"x", line)
    assert tagged(out, b"x").startswith(b"x BAD [CLIENTBUG]"), out


def test_rfc_example_a001_convert_to_a_type_gives_the_part_opened_by_openssl(
    tmp_path: Path, store: KeyStore
) -> None:
    """RFC 5259's a001, to application/pkcs7-mime: openssl opens BINARY[2] to part 2's entity."""
    session = converting_session(tmp_path, store, MESSAGE, cert_der=WHO.cert_der, secret=SECRET)
    out = run(session, b"a001", b'CONVERT 1 ("APPLICATION/PKCS7-MIME") BINARY[2]')
    assert out.startswith(b'* 1 CONVERTED (TAG "a001") (BINARY[2] ')
    assert tagged(out, b"a001") == b"a001 OK CONVERT completed"
    assert openssl_open(literal(out, b"BINARY[2]"), WHO, tmp_path) == part_entity(2)


def test_rfc_example_b001_unrepresentable_then_replaced(tmp_path: Path, store: KeyStore) -> None:
    """b001: non-ASCII text to us-ascii fails with the ERROR phrase and NO; with
    unknown-character-replacement it succeeds, each character replaced."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"b001", b'CONVERT 1 ("text/plain" ("charset" "us-ascii")) BINARY[3]')
    assert out == (
        b'* 1 CONVERTED (TAG "b001") (BINARY[3] (ERROR "Source text has characters the '
        b'charset cannot represent" BADPARAMETERS "text/plain" "text/plain" '
        b'("charset" "us-ascii")))\r\nb001 NO All conversions failed\r\n'
    )
    out = run(
        session,
        b"b002",
        b'CONVERT 1 ("text/plain" ("charset" "us-ascii" "unknown-character-replacement" "?"))'
        b" BINARY[3]",
    )
    assert literal(out, b"BINARY[3]") == "".join(
        c if c.isascii() else "?" for c in UTF8_TEXT
    ).encode("ascii")
    assert tagged(out, b"b002") == b"b002 OK CONVERT completed"


def test_rfc_example_b003_missing_charset(tmp_path: Path, store: KeyStore) -> None:
    """b003: a text target without CHARSET is ERROR MISSINGPARAMETERS and NO."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"b003", b'CONVERT 1 ("TEXT/PLAIN") BINARY[1]')
    assert b'(ERROR "CHARSET must be specified for text conversions" MISSINGPARAMETERS ' in out
    assert b'"text/plain" "text/plain" ("charset"))' in out
    assert tagged(out, b"b003").startswith(b"b003 NO")


def test_rfc_examples_c000_c001_size_then_slices_are_the_same_octets(
    tmp_path: Path, store: KeyStore
) -> None:
    """BINARY.SIZE first, then BINARY<o.n> slices, then BINARY[]: all describe the same octets;
    a second session (same view secret) gets the very same ones."""
    session = converting_session(tmp_path, store, MESSAGE, cert_der=WHO.cert_der, secret=SECRET)
    target = b'("application/pkcs7-mime" ("smime-cipher" "aes256-gcm"))'
    out = run(session, b"c000", b"CONVERT 1 " + target + b" BINARY.SIZE[2]")
    size = int(re.search(rb"BINARY\.SIZE\[2\] (\d+)\)", out).group(1))  # type: ignore[union-attr]
    whole = literal(run(session, b"c1", b"CONVERT 1 " + target + b" BINARY[2]"), b"BINARY[2]")
    slices = b""
    for origin in range(0, size, 1000):
        out = run(session, b"c001", b"CONVERT 1 %s BINARY[2]<%d.1000>" % (target, origin))
        slices += literal(out, b"BINARY[2]<%d>" % origin)
    assert size == len(whole) == len(slices) and whole == slices
    other = another_session(session, store, tmp_path, SECRET)
    again = run(other, b"c2", b"CONVERT 1 " + target + b" BINARY[2]")
    assert literal(again, b"BINARY[2]") == whole
    assert openssl_open(whole, WHO, tmp_path) == part_entity(2)


def test_rfc_example_e002_structure_comes_before_the_data_and_matches_it(
    tmp_path: Path, store: KeyStore
) -> None:
    """BODYPARTSTRUCTURE listed first is answered first; its type and size are BINARY's."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(
        session,
        b"e002",
        b'UID CONVERT 1 ("text/plain" ("charset" "utf-8")) (BODYPARTSTRUCTURE[1] BINARY[1])',
    )
    data = LATIN1_TEXT.encode("utf-8")
    assert out.startswith(
        b'* 1 CONVERTED (TAG "e002") (UID 1 BODYPARTSTRUCTURE[1] ("TEXT" "PLAIN" '
        b'("charset" "utf-8" "format" "flowed") NIL NIL "8BIT" %d 1 NIL NIL NIL NIL) '
        b"BINARY[1] {%d}\r\n" % (len(data), len(data))
    ), out
    assert literal(out, b"BINARY[1]") == data


def test_rfc_example_f001_available_conversions(tmp_path: Path, store: KeyStore) -> None:
    """AVAILABLECONVERSIONS with NIL: the targets CONVERSIONS lists for that part's type."""
    session = converting_session(tmp_path, store, MESSAGE, cert_der=WHO.cert_der)
    out = run(
        session, b"f001", b"CONVERT 1 (NIL) (AVAILABLECONVERSIONS[2] AVAILABLECONVERSIONS[1])"
    )
    assert b'AVAILABLECONVERSIONS[2] (("application/pkcs7-mime" "application/octet-stream"))' in out
    assert b'AVAILABLECONVERSIONS[1] (("text/plain" "application/pkcs7-mime"))' in out


def test_rfc_example_d002_header_encoded_words(tmp_path: Path, store: KeyStore) -> None:
    """BODY[HEADER] with NIL and CHARSET utf-8: the KOI8-R word decoded (plain ASCII here)."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"D002", b'CONVERT 1 (NIL ("CHARSET" "utf-8")) BODY[HEADER]')
    header = literal(out, b"BODY[HEADER]")
    assert b"Subject: why encode this\r\n" in header and header.endswith(b"\r\n\r\n")


def test_without_a_key_the_encryption_is_an_error_and_no(tmp_path: Path, store: KeyStore) -> None:
    """No S/MIME key: per-part ERROR BADPARAMETERS, tagged NO, nothing of the part sent."""
    session = converting_session(tmp_path, store, MESSAGE)
    out = run(session, b"n", b'CONVERT 1 ("application/pkcs7-mime") (BINARY[2] BINARY.SIZE[2])')
    assert out.count(b"(ERROR ") == 2 and b"BADPARAMETERS" in out
    assert tagged(out, b"n").startswith(b"n NO")
    assert b"table.bin" not in out and b"{" not in out


def test_convert_never_sets_seen(tmp_path: Path, store: KeyStore) -> None:
    """Unlike FETCH BINARY/BODY, CONVERT leaves \\Seen alone (section 6)."""
    session = converting_session(tmp_path, store, MESSAGE)
    run(session, b"s", b'CONVERT 1 ("text/plain" ("charset" "utf-8")) BINARY[1]')
    assert b"\\Seen" not in run(session, b"f", b"FETCH 1 FLAGS")


def test_no_expunge_during_convert_but_uid_convert_may(tmp_path: Path, store: KeyStore) -> None:
    """Another session's EXPUNGE is held back during CONVERT, told during UID CONVERT."""
    session = converting_session(tmp_path, store, MESSAGE, MESSAGE)
    other = another_session(session, store, tmp_path, None)
    run(other, b"d", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    run(other, b"e", b"EXPUNGE")
    item = b'("text/plain" ("charset" "utf-8")) BINARY[1]'
    out = run(session, b"c", b"CONVERT 2 " + item)
    assert b"EXPUNGE" not in out and b"* 2 CONVERTED" in out
    out = run(session, b"u", b"UID CONVERT 2 " + item)
    assert b"* 1 EXPUNGE" in out


def test_mode_always_converts_the_view_and_never_reveals_the_body(
    tmp_path: Path, store: KeyStore
) -> None:
    """Under MODE ALWAYS the sections are the view's: a charset conversion of part 1 meets the
    application/pkcs7-mime view and fails; no octet of the stored text crosses the wire."""
    marker = b"LEAK-CANARY-convert-7f3a"
    message = MESSAGE.replace(b"Gr=FC=DFe", marker + b" Gr=FC=DFe")
    session = converting_session(
        tmp_path, store, message, cert_der=WHO.cert_der, always=True, secret=SECRET
    )
    for line in (
        b'CONVERT 1 ("text/plain" ("charset" "utf-8")) (BINARY[1] BODYPARTSTRUCTURE[1])',
        b'CONVERT 1 (NIL ("charset" "utf-8")) (BINARY[1] BINARY[] BODY[HEADER])',
        b'CONVERT 1 ("text/plain" ("charset" "utf-8")) (BINARY[1.1] BINARY[3])',
        b"CONVERT 1 (NIL) (BINARY[1] AVAILABLECONVERSIONS[1])",
    ):
        out = run(session, b"m", line)
        assert marker not in out and LATIN1_TEXT.encode("utf-8") not in out, out
        assert b"Gr\xfc\xdfe" not in out and b"K=F6ln" not in out
    out = run(session, b"t", b'CONVERT 1 ("text/plain" ("charset" "utf-8")) BINARY[1]')
    assert b'BADPARAMETERS "application/pkcs7-mime" "text/plain"' in out
    # The view's part 1 itself may be converted (identity): it is ciphertext.
    out = run(session, b"v", b"CONVERT 1 (NIL) BINARY[1]")
    assert tagged(out, b"v") == b"v OK CONVERT completed"


def test_too_many_parts_or_messages_are_refused_with_their_codes(
    tmp_path: Path, store: KeyStore
) -> None:
    """Section 8.5: more parts than MAX_PARTS is NO [MAXCONVERTPARTS n], more messages than
    MAX_MESSAGES NO [MAXCONVERTMESSAGES n]; nothing is converted."""
    from transcoder.imap import convert as mixin

    session = converting_session(tmp_path, store, MESSAGE, MESSAGE)
    parts = b" ".join(b"BINARY[%d]" % n for n in range(1, mixin.MAX_PARTS + 2))
    out = run(session, b"p", b'CONVERT 1 ("text/plain" ("charset" "utf-8")) (' + parts + b")")
    assert out == b"p NO [MAXCONVERTPARTS %d] At most %d body parts at once\r\n" % (
        mixin.MAX_PARTS,
        mixin.MAX_PARTS,
    )
    for _ in range(mixin.MAX_MESSAGES):
        session.deliver(MESSAGE)
    run(session, b"n", b"NOOP")
    out = run(session, b"m", b'CONVERT 1:* ("text/plain" ("charset" "utf-8")) BINARY[1]')
    assert tagged(out, b"m").startswith(b"m NO [MAXCONVERTMESSAGES %d]" % mixin.MAX_MESSAGES)
    assert b"CONVERTED" not in out


def test_a_converter_that_breaks_is_an_opaque_error_never_the_part(
    tmp_path: Path, store: KeyStore
) -> None:
    """An exception inside a converter: ERROR TEMPFAIL for that part, NO, the detail logged."""
    from twisted.logger import formatEvent, globalLogPublisher

    from transcoder.convert import ConversionRegistry

    class Broken:
        name, source, target, parameters, encrypts = "broken", "*", "x-test/broken", (), True

        def available(self, context: object) -> bool:
            return True

        def convert(self, *args: object) -> object:
            raise RuntimeError("secret detail 42")

    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        session = converting_session(tmp_path, store, MESSAGE)
        session.server._conversion_registry = ConversionRegistry([Broken()])
        out = run(session, b"x", b'CONVERT 1 ("x-test/broken") (BINARY[1] BINARY.SIZE[1])')
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert out.count(b'(ERROR "The part could not be converted" TEMPFAIL)') == 2
    assert b"secret detail" not in out and b"Gr" not in out
    assert tagged(out, b"x").startswith(b"x NO")
    assert any("RuntimeError: secret detail 42" in formatEvent(e) for e in events)


def test_convert_needs_a_selected_mailbox_conversions_does_not(
    tmp_path: Path, store: KeyStore
) -> None:
    """CONVERT is a selected-state command (section 10: command-select); CONVERSIONS is not."""
    from tests.imap.convert_support import configure
    from tests.imap.harness import make_session

    session = make_session(tmp_path)
    configure(session, store, tmp_path, None)
    out = run(session, b"c", b'CONVERT 1 ("text/plain") BINARY[1]')
    assert re.match(rb"c (BAD|NO) \[", tagged(out, b"c")), out
    out = run(session, b"l", b'CONVERSIONS "text/plain" "*"')
    assert b'* CONVERSION "text/plain" "text/plain"' in out and b"l OK" in out
