"""``transcoder-admin key ...`` and ``policy``: the server-side key tools on a real data directory.

Most tests call :func:`transcoder.admin.main` in-process with an injected
clock (the test certificates' moment); a few run the real CLI as a
subprocess, with certificates made for the real clock, to pin exit statuses
and one-line errors.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.keyfactory import PgpKeys
from tests.keys.certs import ALICE, NOW, der, key_usage, make_ca, make_cert, pem
from transcoder.admin import main
from transcoder.auth import AccountsFile
from transcoder.keys.keystore import KeyStore
from transcoder.keys.model import KeyFormat, KeyStatus, PolicyMode

REPO = Path(__file__).resolve().parents[1]
BOB = "bob@example.org"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory with the accounts alice@example.org and bob@example.org."""
    folder = tmp_path / "data"
    folder.mkdir()
    accounts = AccountsFile(folder / "accounts")
    for address in (ALICE, BOB):
        accounts.add(address, "pw")
    return folder


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    """One P-256 key for the module."""
    return ec.generate_private_key(ec.SECP256R1())


def run(data: Path, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    """``transcoder-admin --data DATA ARGS`` in-process at NOW; (status, stdout)."""
    out = io.StringIO()
    status = main(
        ["--data", str(data), *args],
        stdin=io.TextIOWrapper(io.BytesIO(stdin)),
        stdout=out,
        clock=lambda: NOW,
    )
    return status, out.getvalue()


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``python -m transcoder.admin`` in a subprocess (the real clock)."""
    return subprocess.run(
        [sys.executable, "-m", "transcoder.admin", "--data", str(data), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def stored_keys(data: Path) -> list[Any]:
    """Every key in DIR/keys.db, read independently of the CLI."""
    with KeyStore(data / "keys.db") as store:
        return store.list_keys(None, NOW)


def audit_records(data: Path) -> list[dict[str, Any]]:
    """The audit records in DIR/audit.jsonl."""
    lines = (data / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["audit"] for line in lines]


def write(path: Path, content: bytes) -> str:
    """Write ``content`` to ``path``; return the path as an argument."""
    path.write_bytes(content)
    return str(path)


def test_import_stores_and_audits(data: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    """key import stores a valid certificate, prints it, and audits who did it."""
    cert = make_cert(p256)
    status, out = run(data, "key", "import", "Alice@Example.ORG", write(data / "a.pem", pem(cert)))
    assert status == 0
    (key,) = stored_keys(data)
    assert key.account == ALICE and key.material == der(cert)
    expected = f"{ALICE} SMIME {key.fingerprint} ACTIVE ENCRYPT,SIGN 2027-03-01T12:00:00Z EC-P256"
    assert out == f"stored {expected}\n"
    (record,) = audit_records(data)
    assert record["event"] == "key.stored" and record["via"] == "transcoder-admin"


def test_import_from_stdin(data: Path, pgp_keys: PgpKeys) -> None:
    """``-`` reads the key from standard input, OpenPGP included."""
    status, out = run(data, "key", "import", ALICE, "-", stdin=pgp_keys.alice_25519)
    assert status == 0, out
    (key,) = stored_keys(data)
    assert key.format is KeyFormat.OPENPGP and key.fingerprint == pgp_keys.alice_25519_fpr.lower()


@pytest.mark.parametrize(
    ("make_material", "code"),
    [
        (lambda k: der(make_cert(k, sans=(BOB,))), "XKEY-ADDRESS"),
        (lambda k: der(make_cert(k, not_after=NOW - timedelta(days=1))), "XKEY-INVALID"),
        (lambda k: b"\x30" * (256 * 1024 + 1), "XKEY-TOOBIG"),
    ],
    ids=["other-address", "expired", "too-big"],
)
def test_import_refusals(
    data: Path,
    p256: ec.EllipticCurvePrivateKey,
    capsys: pytest.CaptureFixture[str],
    make_material: Any,
    code: str,
) -> None:
    """A key XKEY would refuse is refused with the same code; nothing is stored."""
    path = write(data / "key.bin", make_material(p256))
    assert run(data, "key", "import", ALICE, path)[0] == 1
    assert capsys.readouterr().err.startswith(f"transcoder-admin: key refused [{code}]: ")
    assert not (data / "keys.db").exists() or stored_keys(data) == []


def test_import_secret_key_refused(
    data: Path, pgp_keys: PgpKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OpenPGP secret key is refused as XKEY refuses it, and its secret is not stored."""
    path = write(data / "secret.asc", pgp_keys.alice_25519_secret_armored)
    assert run(data, "key", "import", ALICE, path)[0] == 1
    assert "secret key material" in capsys.readouterr().err
    assert stored_keys(data) == []
    assert audit_records(data)[0]["event"] == "key.refused"


def test_import_applies_smime_ca(data: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    """With --smime-ca a self-signed certificate is refused and a CA-issued one stored."""
    ca = make_ca()
    anchors = write(data / "ca.pem", pem(ca.cert))
    self_signed = write(data / "self.pem", pem(make_cert(p256)))
    assert run(data, "key", "import", ALICE, self_signed, "--smime-ca", anchors)[0] == 1
    issued = write(data / "issued.pem", pem(make_cert(p256, issuer=ca)))
    assert run(data, "key", "import", ALICE, issued, "--smime-ca", anchors)[0] == 0
    assert len(stored_keys(data)) == 1


def test_unknown_account_refused(data: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    """Keys and policies of an account that does not exist are refused."""
    path = write(data / "c.pem", pem(make_cert(p256, sans=("carol@example.org",))))
    assert run(data, "key", "import", "carol@example.org", path)[0] == 1
    assert run(data, "key", "list", "carol@example.org")[0] == 1
    assert run(data, "policy", "carol@example.org")[0] == 1
    assert not (data / "keys.db").exists() or stored_keys(data) == []


def test_list_retire_purge(data: Path, p256: ec.EllipticCurvePrivateKey, pgp_keys: PgpKeys) -> None:
    """list shows keys per account; retire keeps the key RETIRED; purge erases it."""
    run(data, "key", "import", ALICE, write(data / "a.pem", pem(make_cert(p256))))
    run(data, "key", "import", ALICE, "-", stdin=pgp_keys.alice_25519)
    bob_cert = make_cert(ec.generate_private_key(ec.SECP256R1()), sans=(BOB,))
    run(data, "key", "import", BOB, write(data / "b.pem", pem(bob_cert)))
    status, out = run(data, "key", "list")
    assert status == 0 and [line.split()[0] for line in out.splitlines()] == [ALICE, ALICE, BOB]
    status, out = run(data, "key", "list", BOB)
    assert status == 0 and len(out.splitlines()) == 1
    fingerprint = out.split()[2]
    status, out = run(data, "key", "retire", fingerprint.upper())
    assert status == 0 and out.startswith(f"retired {BOB} SMIME {fingerprint} RETIRED ")
    assert [k.status for k in stored_keys(data) if k.account == BOB] == [KeyStatus.RETIRED]
    assert run(data, "key", "purge", fingerprint)[0] == 0
    assert [k.account for k in stored_keys(data)] == [ALICE, ALICE]
    assert audit_records(data)[-1]["event"] == "key.purged"
    assert run(data, "key", "retire", fingerprint)[0] == 1
    assert run(data, "key", "purge", fingerprint)[0] == 1


def test_policy_show_and_change(
    data: Path, p256: ec.EllipticCurvePrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    """policy shows what is in effect and why; --mode always needs a usable key; --format
    sets the format; --sign sets SIGN, else the server's recorded default applies."""
    assert run(data, "policy", ALICE) == (
        0,
        f"{ALICE} MODE OFF FORMAT NIL (none set, and no usable encryption key)"
        " SIGN OFF (server default)\n",
    )
    assert run(data, "policy", ALICE, "--mode", "always")[0] == 1
    assert "no usable" in capsys.readouterr().err
    run(data, "key", "import", ALICE, write(data / "a.pem", pem(make_cert(p256))))
    assert run(data, "policy", ALICE) == (
        0,
        f"{ALICE} MODE OFF FORMAT SMIME (newest key's) SIGN OFF (server default)\n",
    )
    assert run(data, "policy", ALICE, "--mode", "ALWAYS") == (
        0,
        f"{ALICE} MODE ALWAYS FORMAT SMIME (newest key's) SIGN OFF (server default)\n",
    )
    with KeyStore(data / "keys.db") as store:  # what a server started with --sign-views records
        store.record_server_setting("sign-views", "ON", NOW)
    assert run(data, "policy", ALICE)[1].endswith(" SIGN ON (server default)\n")
    assert run(data, "policy", ALICE, "--sign", "OFF")[1].endswith(
        " SMIME (newest key's) SIGN OFF\n"
    )
    assert run(data, "policy", ALICE, "--mode", "off", "--format", "openpgp") == (
        0,
        f"{ALICE} MODE OFF FORMAT OPENPGP SIGN OFF\n",
    )
    with KeyStore(data / "keys.db") as store:
        assert store.get_policy(ALICE, NOW).mode is PolicyMode.OFF


def test_signing_only_certificate_cannot_enable_always(
    data: Path, p256: ec.EllipticCurvePrivateKey
) -> None:
    """A signing-only certificate imports (USAGE SIGN) but policy --mode always is refused."""
    cert = make_cert(p256, usage=key_usage(digital_signature=True))
    status, out = run(data, "key", "import", ALICE, write(data / "s.pem", pem(cert)))
    assert status == 0 and " SIGN " in out
    assert run(data, "policy", ALICE, "--mode", "always")[0] == 1


def test_cli_exit_statuses_and_one_line_errors(
    data: Path, p256: ec.EllipticCurvePrivateKey
) -> None:
    """As a process: 0 on success, 1 with one stderr line when refused, 2 on bad syntax."""
    now = datetime.now(UTC)
    cert = make_cert(p256, not_before=now - timedelta(days=1), not_after=now + timedelta(days=9))
    done = cli(data, "key", "import", ALICE, write(data / "a.pem", pem(cert)))
    assert done.returncode == 0 and done.stdout.startswith("stored "), done.stderr
    done = cli(data, "key", "import", BOB, str(data / "a.pem"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "[XKEY-ADDRESS]" in done.stderr and "Traceback" not in done.stderr
    done = cli(data, "policy", ALICE, "--mode", "sometimes")
    assert done.returncode == 2
    done = cli(data, "key", "list")
    assert done.returncode == 0 and done.stdout.startswith(ALICE)


def test_key_list_aligns_openpgp_and_smime_rows(
    data: Path, p256: ec.EllipticCurvePrivateKey, pgp_keys: PgpKeys
) -> None:
    """A list mixing 64-digit S/MIME and 40-digit OpenPGP fingerprints reads as a table:
    every column starts at the same offset on every line."""
    run(data, "key", "import", ALICE, write(data / "a.pem", pem(make_cert(p256))))
    run(data, "key", "import", ALICE, "-", stdin=pgp_keys.alice_25519)
    status, out = run(data, "key", "list")
    smime, openpgp = out.splitlines()
    assert status == 0 and " OPENPGP " in openpgp
    for word in ("ACTIVE", "ENCRYPT"):
        assert smime.index(word) == openpgp.index(word), out
    assert not any(line.endswith(" ") for line in out.splitlines())


def test_import_says_what_it_superseded(data: Path) -> None:
    """Importing a second certificate prints the stored key and the one it retired."""
    first = make_cert(ec.generate_private_key(ec.SECP256R1()))
    second = make_cert(ec.generate_private_key(ec.SECP256R1()))
    assert run(data, "key", "import", ALICE, write(data / "1.pem", pem(first)))[0] == 0
    status, out = run(data, "key", "import", ALICE, write(data / "2.pem", pem(second)))
    stored, superseded = out.splitlines()
    assert status == 0 and stored.startswith(f"stored {ALICE} SMIME ")
    old = next(k for k in stored_keys(data) if k.material == der(first))
    assert superseded.startswith(f"superseded (now retired) {ALICE} SMIME {old.fingerprint} ")
    assert " RETIRED " in superseded


def test_audit_lines_carry_no_unpersistable_logger(
    data: Path, p256: ec.EllipticCurvePrivateKey
) -> None:
    """audit.jsonl lines hold the audit record and the event's time and level, not
    twisted.logger's Logger object (written as {"unpersistable": true})."""
    run(data, "key", "import", ALICE, write(data / "a.pem", pem(make_cert(p256))))
    run(data, "policy", ALICE, "--mode", "always")
    lines = (data / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line)["audit"]["event"] for line in lines]
    assert {"key.stored", "policy.changed"} <= set(events)
    for line in lines:
        assert "unpersistable" not in line, line
        assert "log_logger" not in json.loads(line)
