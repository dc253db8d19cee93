"""transcoder.client without a network: response tokenizer, XKEY parsing, output, arguments."""

from __future__ import annotations

import io
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest

from transcoder.client import KeyInfo, PolicyInfo, XKeyConnectionError, XKeyError, main
from transcoder.client.cli import format_keys, format_policy
from transcoder.client.session import is_loopback, normalize_fingerprint
from transcoder.client.syntax import (
    join_untagged,
    parse_status_text,
    parse_timestamp,
    parse_values,
    parse_xkey_responses,
)
from transcoder.errors import ClientError

DESIGN_EXAMPLE = (
    b'(FORMAT SMIME FINGERPRINT "00ff" ADDRESSES ("a@b.example") '
    b'NOT-AFTER "2027-01-31T00:00:00Z" USAGE (ENCRYPT) STATUS ACTIVE)'
)


# --- tokenizer -------------------------------------------------------------------------


def test_atoms_nil_and_lists() -> None:
    """Atoms become text, NIL becomes None, parentheses become nested lists."""
    assert parse_values(b"POLICY (MODE nil (A B) ())") == ["POLICY", ["MODE", None, ["A", "B"], []]]


def test_quoted_string_escapes() -> None:
    """A quoted string keeps its spaces and parentheses and unescapes \\" and \\\\."""
    assert parse_values(rb'"a \"b\" \\ (c)"') == ['a "b" \\ (c)']


def test_quoted_nil_is_text() -> None:
    """A quoted "NIL" is the text NIL, not the absence of a value."""
    assert parse_values(b'"NIL" NIL') == ["NIL", None]


def test_utf8_strings() -> None:
    """Quoted strings and literals are decoded as UTF-8 (RFC 6855 addresses)."""
    raw = "jörg@exämple.org".encode()
    literal = b"{%d}\r\n" % len(raw) + raw
    assert parse_values(b'("' + raw + b'" ' + literal + b")") == [["jörg@exämple.org"] * 2]


def test_literal_may_hold_any_octets() -> None:
    """A literal's length, not its content, ends it: CRLF, quotes and parens inside are data."""
    assert parse_values(b'({7}\r\na)"\r\n(b X)') == [['a)"\r\n(b', "X"]]


def test_empty_input_is_no_values() -> None:
    """An empty response body tokenizes to an empty list."""
    assert parse_values(b"") == []


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"(A B", "unbalanced"),
        (b"A B)", "unbalanced"),
        (b"(A  B)", "unexpected character"),
        (b"A ", "expected a value"),
        (b"( A)", "unexpected character"),
        (b"(A)(B)", "expected a space"),
        (b'"abc', "unterminated"),
        (b'"a\\nb"', "bad escape"),
        (b'"a\\', "bad escape"),
        (b'"a\r\nb"', "CR, LF or NUL"),
        (b"{5}\r\nabc", "shorter than announced"),
        (b"{x}\r\nabc", "bad literal length"),
        (b"{3+}\r\nabc", "bad literal length"),
        (b"{3}abc", "not followed by CRLF"),
        (b"{99999999999}\r\n", "bad literal length"),
        (b"A\x00B", "expected a space"),
        (b"caf\xc3\xa9", "expected a space"),
        (b'"\xff"', "not UTF-8"),
        (b"(" * 9 + b")" * 9, "nested too deeply"),
    ],
)
def test_malformed_responses_raise_protocol(data: bytes, why: str) -> None:
    """Every malformed response is an XKeyError with code PROTOCOL naming the problem."""
    with pytest.raises(XKeyError, match=why) as caught:
        parse_values(data)
    assert caught.value.code == "PROTOCOL"


def test_join_untagged_rebuilds_literals() -> None:
    """imaplib's (prefix, literal) tuples and their trailers join back into one response."""
    items: list[bytes | tuple[bytes, bytes] | None] = [
        (b"(ADDRESSES ({3}", b"a b"),
        b") STATUS ACTIVE)",
        b"POLICY (MODE OFF)",
        None,
    ]
    joined = join_untagged(items)
    assert joined == [b"(ADDRESSES ({3}\r\na b) STATUS ACTIVE)", b"POLICY (MODE OFF)"]
    assert parse_values(joined[0]) == [["ADDRESSES", ["a b"], "STATUS", "ACTIVE"]]


# --- XKEY responses --------------------------------------------------------------------


def test_key_response_from_the_design() -> None:
    """The DESIGN.md example response becomes the KeyInfo it describes."""
    keys, policies = parse_xkey_responses([DESIGN_EXAMPLE])
    assert policies == []
    assert keys == [
        KeyInfo(
            format="SMIME",
            fingerprint="00ff",
            addresses=("a@b.example",),
            not_after=datetime(2027, 1, 31, tzinfo=UTC),
            usage=("ENCRYPT",),
            status="ACTIVE",
        )
    ]


def test_key_response_nil_not_after_and_any_order() -> None:
    """NOT-AFTER NIL means no expiry; items may come in any order and case."""
    raw = (
        b"(status retired usage (encrypt sign) not-after NIL addresses () "
        b'format openpgp fingerprint "AB")'
    )
    (key,), _ = parse_xkey_responses([raw])
    assert key.not_after is None
    assert (key.status, key.format, key.usage, key.addresses) == (
        "RETIRED",
        "OPENPGP",
        ("ENCRYPT", "SIGN"),
        (),
    )


def test_unknown_items_and_responses_are_skipped() -> None:
    """Items and response kinds a later server version adds are ignored, not fatal."""
    raw = DESIGN_EXAMPLE[:-1] + b' CREATED "2026-01-01T00:00:00Z" EXTRA (A (B)))'
    keys, _ = parse_xkey_responses([raw, b"STATS (KEYS 3)"])
    assert [k.fingerprint for k in keys] == ["00ff"]


def test_not_after_is_converted_to_utc() -> None:
    """A NOT-AFTER with an offset is the same instant in UTC."""
    assert parse_timestamp("2027-01-31T02:00:00+02:00") == datetime(2027, 1, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        b'(FORMAT SMIME FINGERPRINT "ab" ADDRESSES ())',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE FORMAT OPENPGP)',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS)',
        b"(FORMAT SMIME FINGERPRINT NIL STATUS ACTIVE)",
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS (ACTIVE))',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE ADDRESSES "a@b")',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE USAGE ((ENCRYPT)))',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE NOT-AFTER "2027-01-31")',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE NOT-AFTER "2027-01-31T00:00:00")',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE NOT-AFTER "soon")',
        b'((FORMAT) SMIME FINGERPRINT "ab" STATUS ACTIVE)',
        b'(FORMAT SMIME FINGERPRINT "ab" STATUS ACTIVE) EXTRA',
        b"POLICY MODE OFF",
        b"POLICY (FORMAT SMIME)",
        b"",
    ],
)
def test_malformed_xkey_responses_raise_protocol(raw: bytes) -> None:
    """A key or policy response missing, repeating or mistyping an item is a PROTOCOL error."""
    with pytest.raises(XKeyError) as caught:
        parse_xkey_responses([raw])
    assert caught.value.code == "PROTOCOL"


def test_policy_response() -> None:
    """``POLICY (MODE ALWAYS FORMAT SMIME)`` and ``FORMAT NIL`` both parse."""
    _, policies = parse_xkey_responses(
        [b"POLICY (MODE ALWAYS FORMAT SMIME)", b"POLICY (MODE off FORMAT NIL)"]
    )
    assert policies == [PolicyInfo("ALWAYS", "SMIME"), PolicyInfo("OFF", None)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"[XKEY-ADDRESS] certificate is for bob@example.org",
            ("XKEY-ADDRESS", "certificate is for bob@example.org"),
        ),
        (b"[BADCHARSET (UTF-8)] no", ("BADCHARSET", "no")),
        ("[xkey-nokey]", ("XKEY-NOKEY", "")),
        (b"plain refusal", (None, "plain refusal")),
        (b"[unclosed refusal", (None, "[unclosed refusal")),
    ],
)
def test_status_text_response_codes(text: bytes | str, expected: tuple[str | None, str]) -> None:
    """The bracketed response code (RFC 3501 section 7.1) is split from the text."""
    assert parse_status_text(text) == expected


# --- values, errors, output ------------------------------------------------------------


def test_values_are_frozen() -> None:
    """KeyInfo and PolicyInfo cannot be changed after they are made."""
    policy = PolicyInfo("OFF", None)
    with pytest.raises(AttributeError):
        policy.mode = "ALWAYS"  # type: ignore[misc]


def test_error_carries_code_and_text() -> None:
    """XKeyError is a ClientError whose str is ``CODE: text``; it survives pickling."""
    error = XKeyError("XKEY-ADDRESS", "wrong address")
    assert isinstance(error, ClientError)
    assert (error.code, error.text, error.response, str(error)) == (
        "XKEY-ADDRESS",
        "wrong address",
        "NO",
        "XKEY-ADDRESS: wrong address",
    )
    assert str(XKeyError(None, "no code")) == "no code"
    copy = pickle.loads(pickle.dumps(XKeyConnectionError("TLS", "bad cert")))
    assert (type(copy), copy.code, copy.text) == (XKeyConnectionError, "TLS", "bad cert")


def test_key_lines_and_json() -> None:
    """``keys`` prints aligned columns; --json gives the same data as JSON."""
    long = KeyInfo(
        "SMIME",
        "a" * 8,
        ("a@b", "c@d"),
        datetime(2027, 1, 31, 12, tzinfo=UTC),
        ("ENCRYPT",),
        "ACTIVE",
    )
    short = KeyInfo("OPENPGP", "b" * 4, (), None, (), "RETIRED")
    assert format_keys([long, short]) == [
        "aaaaaaaa  SMIME    ACTIVE   2027-01-31T12:00:00Z  a@b,c@d  ENCRYPT",
        "bbbb      OPENPGP  RETIRED  never                 -  -",
    ]
    assert json.loads(json.dumps(long.to_json())) == {
        "format": "SMIME",
        "fingerprint": "aaaaaaaa",
        "addresses": ["a@b", "c@d"],
        "not_after": "2027-01-31T12:00:00Z",
        "usage": ["ENCRYPT"],
        "status": "ACTIVE",
    }
    assert format_keys([]) == []


def test_timestamps_print_in_utc() -> None:
    """A not-after in another zone is printed as the same instant in UTC."""
    when = datetime(2027, 1, 31, 2, tzinfo=timezone(timedelta(hours=2)))
    assert (
        KeyInfo("SMIME", "a", (), when, (), "ACTIVE").to_json()["not_after"]
        == "2027-01-31T00:00:00Z"
    )


def test_policy_lines() -> None:
    """``policy`` prints mode and format, ``none`` when there is no format."""
    assert format_policy(PolicyInfo("OFF", None)) == ["mode: OFF", "format: none"]


# --- helpers of the session --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.1", False),
        ("::ffff:192.0.2.1", False),
        ("fe80::1%eth0", False),
        ("localhost", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    """Only loopback peer addresses (v4, v6 and v4-mapped) may get a password in the clear."""
    assert is_loopback(address) is loopback


def test_fingerprints_are_normalized_and_checked() -> None:
    """Pasted spaces and colons are dropped; anything but hex never reaches the wire."""
    assert normalize_fingerprint(" AB:cd 01 ") == "ABcd01"
    for bad in ("", "AB\r\nXKEY DELETE CD", "xyz", '"AB"'):
        with pytest.raises(ValueError):
            normalize_fingerprint(bad)


# --- command line, up to the point of connecting -----------------------------------------


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(
        list(argv),
        environ=environ if environ is not None else {"TRANSCODER_PASSWORD": "x"},
        prompt=lambda _: pytest.fail("prompted"),
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "h", "keys"],
        ["--user", "u", "keys"],
        ["--host", "h", "--user", "u"],
        ["--host", "h", "--user", "u", "policy", "--mode", "sometimes"],
        ["--host", "h", "--user", "u", "policy", "--format", "pem"],
        ["--host", "h", "--user", "u", "--tls", "--starttls", "keys"],
        ["--host", "h", "--user", "u", "--tls", "--insecure", "--cafile", "f", "keys"],
        ["--host", "h", "--user", "u", "--insecure", "keys"],
        ["--host", "h", "--user", "u", "--password", "secret", "keys"],
        ["--host", "h", "--user", "u", "provision"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing, unknown or conflicting options are usage errors (exit 2); there is no --password."""
    with pytest.raises(SystemExit) as caught:
        run(*argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_unreadable_key_file_exits_2() -> None:
    """A key file that cannot be read is reported on one line before any connection."""
    status, out, err = run("--host", "h", "--user", "u", "provision", "/nonexistent/key.pem")
    assert (status, out) == (2, "")
    assert err.startswith("transcoder-client: cannot read /nonexistent/key.pem")


def test_bad_fingerprint_exits_2_before_connecting() -> None:
    """``retire`` with a non-hex fingerprint is refused without contacting the server."""
    status, _, err = run("--host", "host.invalid", "--user", "u", "retire", "not-hex")
    assert status == 2
    assert err == "transcoder-client: not a hex fingerprint: 'not-hex'\n"


def test_missing_cafile_exits_2() -> None:
    """An unreadable --cafile is a usage error, reported before prompting or connecting."""
    status, _, err = run(
        "--host", "h", "--user", "u", "--tls", "--cafile", "/nonexistent.pem", "keys"
    )
    assert status == 2
    assert err.startswith("transcoder-client: cannot load --cafile /nonexistent.pem")


def test_no_password_without_terminal_exits_2() -> None:
    """With no $TRANSCODER_PASSWORD and no terminal to prompt on, the CLI says how to give one."""

    def no_terminal(prompt: str) -> str:
        raise EOFError

    err = io.StringIO()
    status = main(
        ["--host", "h", "--user", "u", "keys"], environ={}, prompt=no_terminal, stderr=err
    )
    assert status == 2
    assert "TRANSCODER_PASSWORD" in err.getvalue()
