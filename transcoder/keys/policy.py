"""The per-account transcoding policy: parsing its words and resolving its format.

A policy is a MODE (``ALWAYS`` or ``OFF``, default ``OFF``), a FORMAT
(``SMIME`` or ``OPENPGP``) and SIGN (``ON`` or ``OFF``: whether views are
signed by the server's signing key, issue 16; never set, the server's
``--sign-views`` default applies).  A format never set explicitly defaults to the
format of the account's most recently activated usable encryption key
(issue 3, "Keystore"); with no such key it is ``None``.

``MODE ALWAYS`` requires a usable key of the effective format when it is
set (``NO [XKEY-NOKEY]`` otherwise).  Later events -- the key expiring, the
user retiring it -- do not switch the mode off: FETCH then fails closed
(docs/design.md invariant 3) until a key is provisioned or the mode set to OFF.
"""

from __future__ import annotations

from transcoder.errors import BadCommand
from transcoder.keys.model import KeyFormat, Policy, PolicyMode


def parse_mode(word: str) -> PolicyMode:
    """``ALWAYS`` or ``OFF`` (any case) as a PolicyMode; BadCommand otherwise."""
    try:
        return PolicyMode(word.upper())
    except ValueError:
        raise BadCommand("POLICY MODE takes ALWAYS or OFF") from None


def parse_format(word: str) -> KeyFormat:
    """``SMIME`` or ``OPENPGP`` (any case) as a KeyFormat; BadCommand otherwise."""
    try:
        return KeyFormat(word.upper())
    except ValueError:
        raise BadCommand("POLICY FORMAT takes SMIME or OPENPGP") from None


def parse_sign(word: str) -> bool:
    """``ON`` or ``OFF`` (any case) as a bool; BadCommand otherwise."""
    value = {"ON": True, "OFF": False}.get(word.upper())
    if value is None:
        raise BadCommand("POLICY SIGN takes ON or OFF")
    return value


def sign_word(sign: bool) -> str:
    """``ON`` or ``OFF``: how SIGN is spelled on the wire and stored."""
    return "ON" if sign else "OFF"


def stored_sign(text: str | None) -> bool | None:
    """A stored ``policies.sign`` value (``ON``, ``OFF`` or NULL) as ``Policy.sign``."""
    return None if text is None else text == "ON"


def resolve_policy(
    mode: PolicyMode,
    explicit_format: KeyFormat | None,
    newest_key_format: KeyFormat | None,
    sign: bool | None = None,
) -> Policy:
    """The effective policy from what is stored and the newest usable key's format."""
    if explicit_format is not None:
        return Policy(mode, explicit_format, format_is_explicit=True, sign=sign)
    return Policy(mode, newest_key_format, format_is_explicit=False, sign=sign)


def missing_key_message(policy: Policy) -> str:
    """The NO [XKEY-NOKEY] text for ``MODE ALWAYS`` without a usable key."""
    if policy.format is None:
        return "no usable encryption key; provision one with XKEY PUT first"
    return f"no usable {policy.format.value} encryption key; provision one with XKEY PUT first"
