"""No client-controlled text reaches a regular expression that backtracks super-linearly (issue 8).

The audit of every ``re`` use on client data (issue 8 item 1; LIST patterns
have their own file, ``test_list_patterns.py``) found two quadratic ones,
both on key material a user uploads with XKEY PUT:

* an OpenPGP user ID ``<a@a@a@...`` without its ``>`` made
  ``<([^<>\\s]+@[^<>\\s]+)>`` try every ``@`` against every later one;
* a certificate subject holding a newline and a long blank run made the
  chain error's ``\\s*\\(encountered processing`` start from every blank.

Each is pinned by a result test and a generous "< 2 s" guard (the old
expressions take over 5 s on these inputs), and the user ID rewrite by a
property test against the old expressions on small inputs.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from transcoder.keys.addresses import user_id_address
from transcoder.keys.errors import KeyInvalid
from transcoder.keys.smime_chain import verify_chain

#: The expressions before the fix: the reference on inputs too small to hurt.
OLD_ANGLE = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*$")
OLD_BARE = re.compile(r"[^\s<>()\"]+@[^\s<>()\"]+")


def old_user_id_address(user_id: str) -> str | None:
    """``user_id_address`` as it was, with the backtracking expressions."""
    angle = OLD_ANGLE.search(user_id)
    if angle:
        return angle.group(1)
    stripped = user_id.strip()
    return stripped if OLD_BARE.fullmatch(stripped) else None


@given(st.text(alphabet='a@<> ()"\n', max_size=16))
def test_user_id_address_is_unchanged(user_id: str) -> None:
    """The linear user ID parser finds the address the old expressions found."""
    assert user_id_address(user_id) == old_user_id_address(user_id)


@pytest.mark.parametrize(
    ("user_id", "address"),
    [
        ("Alice <alice@example.org>", "alice@example.org"),
        ("alice@example.org", "alice@example.org"),
        ("<a@b@c>", "a@b@c"),
        ("<@example.org>", None),
        ("<alice@>", None),
        ("Alice", None),
    ],
)
def test_user_id_address_examples(user_id: str, address: str | None) -> None:
    """Name <addr>, a bare address, and user IDs that hold none."""
    assert user_id_address(user_id) == address


def test_unclosed_user_id_of_many_ats_is_decided_at_once() -> None:
    """``<a@a@a@...`` (60,000 characters, no ``>``): no address, at once (< 2 s)."""
    for user_id in ("<" + "a@" * 30_000 + "a", "a@" * 30_000 + "("):
        start = time.perf_counter()
        assert user_id_address(user_id) is None
        assert time.perf_counter() - start < 2.0


def _certificate(
    name: x509.Name, key: ec.EllipticCurvePrivateKey, ca: bool, expired: bool = False
) -> x509.Certificate:
    """A self-signed certificate; ``expired`` ended five days ago."""
    now = datetime.now(UTC)
    end = now - timedelta(days=5) if expired else now + timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=10))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def test_chain_error_over_a_blank_run_is_explained_at_once() -> None:
    """Expired leaf, subject of a newline and 100,000 blanks: KeyInvalid at once (< 2 s)."""
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    anchor = _certificate(ca_name, ec.generate_private_key(ec.SECP256R1()), ca=True)
    hostile = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x\n" + " " * 100_000)])
    leaf = _certificate(hostile, ec.generate_private_key(ec.SECP256R1()), ca=False, expired=True)
    start = time.perf_counter()
    # The verifier's message names the leaf ("encountered processing
    # <Certificate(subject=...)>"): the blank run reaches the clean-up.
    with pytest.raises(KeyInvalid, match="not valid at validation time"):
        verify_chain(leaf, [], [anchor], datetime.now(UTC))
    assert time.perf_counter() - start < 2.0
