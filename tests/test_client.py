"""transcoder.client without a network: response tokenizer, XKEY parsing, output, arguments."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.keyfactory import PgpKeys
from tests.keys.certs import der, key_usage, make_cert, pem
from transcoder.client import KeyInfo, PolicyInfo, XKeyConnectionError, XKeyError, main
from transcoder.client.cli import build_parser, format_keys, format_policy, resolve_settings
from transcoder.client.keyfile import KeyFileFacts, inspect_key, would_replace
from transcoder.client.session import is_loopback, normalize_fingerprint
from transcoder.client.settings import Settings
from transcoder.client.syntax import (
    join_untagged,
    parse_status_text,
    parse_timestamp,
    parse_values,
    parse_xkey_responses,
)
from transcoder.errors import ClientError
from transcoder.keys.validate import validate_key

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
    """The docs/design.md example response becomes the KeyInfo it describes."""
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
    """``policy`` prints mode and format; without one, that the first key sets it."""
    assert format_policy(PolicyInfo("OFF", None)) == [
        "mode: OFF",
        "format: not set yet (the first key you provision sets it)",
    ]
    assert format_policy(PolicyInfo("ALWAYS", "SMIME")) == ["mode: ALWAYS", "format: SMIME"]
    assert format_policy(PolicyInfo("ALWAYS", "SMIME", sign=True))[-1] == "sign: ON"
    assert format_policy(PolicyInfo("OFF", "SMIME", sign=False))[-1] == "sign: OFF"


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
        ["--host", "h", "--user", "u"],
        ["--host", "h", "--user", "u", "--plain", "--tls", "keys"],
        ["--port", "x", "keys"],
        ["new-identity", "x509", "alice@example.org"],
        ["--host", "h", "--user", "u", "policy", "--mode", "sometimes"],
        ["--host", "h", "--user", "u", "policy", "--format", "pem"],
        ["--host", "h", "--user", "u", "--tls", "--starttls", "keys"],
        ["--host", "h", "--user", "u", "--tls", "--insecure", "--cafile", "f", "keys"],
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


# --- settings: command line, environment, config file, defaults ---------------------------


def settings_of(argv: list[str], environ: dict[str, str]) -> Settings:
    """The settings ``main`` would connect with."""
    return resolve_settings(build_parser().parse_args(argv), environ)


def test_defaults_are_the_servers() -> None:
    """With nothing given: localhost, STARTTLS on 1143; --tls: 1993; --plain: 1143."""
    assert settings_of(["keys"], {}) == Settings("localhost", 1143, "starttls", None, None)
    assert settings_of(["--tls", "keys"], {}).port == 1993
    assert settings_of(["keys", "--plain"], {}).port == 1143  # options may follow the command
    assert settings_of(["--tls", "--port", "993", "keys"], {}).port == 993


def test_command_line_over_environment_over_config_file(tmp_path: Path) -> None:
    """Each setting comes from the first source that gives it; a relative cafile in the
    config file is relative to the file's folder."""
    config = tmp_path / "conf" / "transcoder" / "client.conf"
    config.parent.mkdir(parents=True)
    config.write_text(
        "[server]\nhost = file.example\nport = 2143\nsecurity = tls\ncafile = ca.pem\n"
        "user = file@example.org\n"
    )
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "conf"), "TRANSCODER_USER": "env@example.org"}
    assert settings_of(["keys"], environ) == Settings(
        "file.example", 2143, "tls", str(config.parent / "ca.pem"), "env@example.org"
    )
    environ["TRANSCODER_SECURITY"] = "STARTTLS"
    got = settings_of(["--user", "cli@example.org", "--host", "cli.example", "keys"], environ)
    assert (got.host, got.security, got.user) == ("cli.example", "starttls", "cli@example.org")
    assert got.port == 2143  # the file's port still applies


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[server]\nhots = x\n", "unknown setting 'hots'"),
        ("host = x\n", "no [server] section"),
        ("[server]\nhost\n", "cannot read"),
        ("[other]\nhost = x\n", "no [server] section"),
        ("[server]\nport = many\n", "port must be a number"),
        ("[server]\nsecurity = ssl\n", "security must be one of"),
    ],
)
def test_bad_config_file_exits_2(tmp_path: Path, text: str, why: str) -> None:
    """A config file with a typo is reported on one line (exit 2), before connecting."""
    config = tmp_path / "client.conf"
    config.write_text(text)
    status, _, err = run("keys", environ={"TRANSCODER_CLIENT_CONFIG": str(config)})
    assert status == 2 and why in err and err.count("\n") == 1, err


def test_configure_writes_the_settings_used_next_time(tmp_path: Path) -> None:
    """``configure`` saves host, port, security, the absolute cafile and the user (mode 0600);
    afterwards the short form connects with them."""
    cafile = tmp_path / "server.crt"
    cafile.write_bytes(der_to_pem_cert())
    environ = {"HOME": str(tmp_path / "home")}
    out = io.StringIO()
    argv = ["configure", "--user", "demo@localhost", "--cafile", str(cafile)]
    assert main(argv, environ=environ, stdout=out) == 0
    path = tmp_path / "home" / ".config" / "transcoder" / "client.conf"
    assert out.getvalue().startswith(f"wrote {path}:\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert settings_of(["keys"], environ) == Settings(
        "localhost", 1143, "starttls", str(cafile), "demo@localhost"
    )


def test_configure_needs_a_user_and_a_loadable_cafile(tmp_path: Path) -> None:
    """Without a user, or with a cafile that is no certificate, nothing is written (exit 2)."""
    environ = {"HOME": str(tmp_path)}
    status, _, err = run("configure", environ=environ)
    assert status == 2 and "configure needs --user" in err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    status, _, err = run("configure", "--user", "u@x", "--cafile", str(bad), environ=environ)
    assert status == 2 and "cannot load --cafile" in err
    assert not (tmp_path / ".config").exists()


def test_no_user_anywhere_exits_2_with_the_setup_step() -> None:
    """No --user, $TRANSCODER_USER or config file: exit 2 naming all three, before connecting."""
    status, _, err = run("keys", environ={"TRANSCODER_PASSWORD": "x"})
    assert status == 2
    assert "--user" in err and "TRANSCODER_USER" in err and "configure --user" in err


def test_plain_with_tls_options_exits_2() -> None:
    """--plain with --cafile or --insecure on the command line is a contradiction (exit 2)."""
    for extra in (["--cafile", "x.pem"], ["--insecure"]):
        status, _, err = run("--user", "u", "--plain", *extra, "keys")
        assert status == 2 and "need TLS" in err, err


# --- key files: what would be replaced -----------------------------------------------------


def der_to_pem_cert() -> bytes:
    """A PEM certificate (any) for loading as a CA file."""
    return pem(make_cert(ec.generate_private_key(ec.SECP256R1())))


def test_inspect_certificate_and_openpgp_key(pgp_keys: PgpKeys) -> None:
    """A certificate's SHA-256 fingerprint and role, an OpenPGP key's primary fingerprint,
    as XKEY reports them; unreadable data is left to the server."""
    cert = make_cert(ec.generate_private_key(ec.SECP256R1()))
    facts = inspect_key(pem(cert))
    assert facts == KeyFileFacts("SMIME", cert.fingerprint(hashes.SHA256()).hex(), True)
    signing = make_cert(
        ec.generate_private_key(ec.SECP256R1()), usage=key_usage(digital_signature=True)
    )
    assert inspect_key(der(signing)).encrypts is False  # type: ignore[union-attr]
    pgp = inspect_key(pgp_keys.alice_25519)
    assert pgp == KeyFileFacts("OPENPGP", pgp_keys.alice_25519_fpr.lower(), True)
    assert inspect_key(b"hello") is None


def test_would_replace_only_active_keys_of_the_same_format_and_role() -> None:
    """Only an ACTIVE key of the same format and role with another fingerprint is replaced."""
    facts = KeyFileFacts("SMIME", "aa", True)

    def key(
        fpr: str, fmt: str = "SMIME", usage: tuple[str, ...] = ("ENCRYPT",), st: str = "ACTIVE"
    ) -> KeyInfo:
        return KeyInfo(fmt, fpr, (), None, usage, st)

    stored = [
        key("AA"),  # the same key: a refresh
        key("bb", st="RETIRED"),
        key("cc", fmt="OPENPGP"),
        key("dd", usage=("SIGN",)),
        key("ee", st="EXPIRED"),
        key("ff"),
    ]
    assert [k.fingerprint for k in would_replace(facts, stored)] == ["ff"]


# --- new-identity --------------------------------------------------------------------------


def test_new_smime_identity_is_accepted_and_importable(tmp_path: Path) -> None:
    """The certificate passes the server's own validation for the address; the PKCS#12 holds
    key and certificate under PBE-SHA1-3DES with the given password; files are not
    overwritten."""
    out = io.StringIO()
    environ = {"TRANSCODER_P12_PASSWORD": "p12 secret"}
    argv = ["new-identity", "smime", "alice@example.org", "--dir", str(tmp_path)]
    assert main(argv, environ=environ, stdout=out) == 0
    crt = (tmp_path / "alice@example.org.crt").read_bytes()
    validated = validate_key(crt, "alice@example.org", datetime.now(UTC))
    assert validated.format.value == "SMIME" and validated.key_algorithm == "RSA-3072"
    assert (tmp_path / "alice@example.org.key").stat().st_mode & 0o777 == 0o600
    p12 = (tmp_path / "alice@example.org.p12").read_bytes()
    key, cert, _ = pkcs12.load_key_and_certificates(p12, b"p12 secret")
    assert cert is not None and cert.public_bytes(serialization.Encoding.PEM) == crt
    assert key is not None
    # pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 appendix C), not PBES2
    assert b"\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01\x03" in p12
    assert "PKCS#12 password: p12 secret" in out.getvalue()
    err = io.StringIO()
    assert main(argv, environ=environ, stdout=io.StringIO(), stderr=err) == 2
    assert "exists; not overwritten" in err.getvalue()


def test_new_openpgp_identity_is_accepted(tmp_path: Path) -> None:
    """gpg makes an Ed25519 key with a Curve25519 encryption subkey that the server accepts."""
    out = io.StringIO()
    argv = ["new-identity", "openpgp", "alice@example.org", "--dir", str(tmp_path)]
    assert main(argv, environ={}, stdout=out) == 0
    public = (tmp_path / "alice@example.org.pub.asc").read_bytes()
    validated = validate_key(public, "alice@example.org", datetime.now(UTC))
    assert validated.format.value == "OPENPGP"
    assert f"fingerprint: {validated.fingerprint.upper()}" in out.getvalue()
    secret = (tmp_path / "alice@example.org.sec.asc").read_bytes()
    assert secret.startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----")


def test_new_smime_identity_p12_imports_into_gpgsm(tmp_path: Path) -> None:
    """gpgsm 2.2 (GnuPG's S/MIME tool) imports new-identity's PKCS#12 and holds the secret key
    for the certificate; like every fresh PKCS#12, one in about forty it misreads is made anew
    (see docs/xkey.md)."""
    gpgsm = shutil.which("gpgsm")
    if gpgsm is None:
        pytest.skip("gpgsm is not installed")
    home = Path(tempfile.mkdtemp(prefix="tc-gpgsm-"))  # short: gpg-agent's socket path
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        for attempt in range(5):
            folder = tmp_path / str(attempt)
            folder.mkdir()
            argv = ["new-identity", "smime", "alice@example.org", "--dir", str(folder)]
            assert main(argv, environ={"TRANSCODER_P12_PASSWORD": "pw"}, stdout=io.StringIO()) == 0
            p12 = str(folder / "alice@example.org.p12")
            done = subprocess.run(
                [
                    gpgsm,
                    "--batch",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-fd",
                    "0",
                    "--import",
                    p12,
                ],
                input=b"pw\n",
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        listed = subprocess.run(
            [gpgsm, "--batch", "--with-colons", "--list-secret-keys"],
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout.decode()
        cert = x509.load_pem_x509_certificate((folder / "alice@example.org.crt").read_bytes())
        assert cert.fingerprint(hashes.SHA1()).hex().upper() in listed
        assert "alice@example.org" in listed
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_new_openpgp_identity_secret_key_decrypts_in_gpg(tmp_path: Path) -> None:
    """The .sec.asc imports into gpg, which decrypts what gpg encrypted to the .pub.asc: an
    Ed25519 primary key with a Curve25519 encryption subkey."""
    gpg = shutil.which("gpg")
    if gpg is None:
        pytest.skip("gpg is not installed")
    argv = ["new-identity", "openpgp", "bob@example.org", "--dir", str(tmp_path)]
    assert main(argv, environ={}, stdout=io.StringIO()) == 0
    home = Path(tempfile.mkdtemp(prefix="tc-gpg-"))
    env = {**os.environ, "GNUPGHOME": str(home)}
    base = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]

    def run_gpg(*args: str, data: bytes = b"") -> bytes:
        done = subprocess.run(
            [*base, *args], input=data, capture_output=True, env=env, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    try:
        run_gpg("--import", str(tmp_path / "bob@example.org.sec.asc"))
        listing = run_gpg("--with-colons", "--list-secret-keys").decode()
        assert any(ln.startswith("ssb:") and ":cv25519:" in ln for ln in listing.splitlines())
        assert any(ln.startswith("sec:") and ":ed25519:" in ln for ln in listing.splitlines())
        encrypted = run_gpg(
            "--trust-model", "always", "--armor", "--encrypt", "-r", "bob@example.org",
            data=b"for bob only",
        )  # fmt: skip
        assert run_gpg("--decrypt", data=encrypted) == b"for bob only"
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
