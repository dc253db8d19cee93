"""Path validation of a user certificate to operator-configured trust anchors (``--smime-ca``).

Uses cryptography's verifier (``cryptography.x509.verification``, cryptography
>= 45 for :class:`ExtensionPolicy`).  Its client verifier applies the Web PKI
profile by default, which demands ``clientAuth`` in the leaf's
extendedKeyUsage and a keyUsage extension in every CA certificate; S/MIME
certificates satisfy neither, so both extension policies are replaced:

* end entity: every extension permitted here; the S/MIME rules on keyUsage,
  extendedKeyUsage and the address are enforced by :mod:`transcoder.keys.smime`;
* CA certificates: basicConstraints must be present (the verifier then
  requires ``cA`` TRUE and enforces ``pathLenConstraint``, RFC 5280 section
  4.2.1.9) and keyUsage, when present, must assert ``keyCertSign`` (RFC 5280
  section 4.2.1.3).

The verifier itself checks every signature on the path, the validity period
of every certificate at ``now`` (RFC 5280 section 6.1.3 (a)), name chaining
and the chain depth.  Revocation (CRL, OCSP) is not checked: the server has no
network access to the CA's distribution points and would fail open anyway.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from transcoder.errors import ConfigurationError
from transcoder.keys.errors import KeyInvalid, printable

#: Longest path accepted: end entity, up to six intermediates, anchor.
MAX_CHAIN_DEPTH = 8

# One optional blank before "(encountered": "\s*\(" would be tried from
# every position of a long blank run (quadratic in an attacker's subject).
_NOISE = re.compile(r"validation failed: |candidates exhausted: |\s?\(encountered processing .*")


def _ca_key_usage(policy: Policy, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    """RFC 5280 section 4.2.1.3: a CA key that signs certificates asserts keyCertSign."""
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("CA certificate's keyUsage lacks keyCertSign")


def _ca_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    """Raise :class:`KeyInvalid` unless ``leaf`` has a valid path to one of ``trust_anchors``.

    ``intermediates`` are untrusted candidates for the path (the certificates
    that came with the leaf); the anchors are trusted as given.
    """
    builder = (
        PolicyBuilder()
        .store(Store(list(trust_anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_ca_policy(), ee_policy=ExtensionPolicy.permit_all())
    )
    try:
        builder.build_client_verifier().verify(leaf, list(intermediates))
    except VerificationError as error:
        reason = _NOISE.sub("", str(error)).strip()
        if not reason or "no interior errors" in reason:
            reason = "issuer not among the trusted CAs or the certificates sent"
        raise KeyInvalid(f"no valid chain to a trusted CA: {printable(reason, 100)}") from None


def load_trust_anchors(path: str | Path) -> list[x509.Certificate]:
    """The CA certificates in the PEM file ``path`` (``--smime-ca FILE``).

    ConfigurationError when the file cannot be read or holds no certificate.
    """
    try:
        anchors = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigurationError(
            f"cannot load S/MIME trust anchors from {path}: {error}"
        ) from error
    return anchors
