"""Accounts (an scrypt-hashed accounts file) and the Twisted cred checker and realm over them.

The cred glue (:mod:`.checker`) is imported on first use, so that
``transcoder-admin user ...`` starts without loading Twisted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transcoder.auth.accounts import (
    Account,
    AccountsFile,
    DuplicateAccountError,
    UnknownAccountError,
    WeakPasswordError,
    normalize_address,
)

if TYPE_CHECKING:
    from transcoder.auth.checker import AccountsChecker, MailRealm, make_portal

_FROM_CHECKER = ("AccountsChecker", "MailRealm", "make_portal")


def __getattr__(name: str) -> Any:
    """The names of :mod:`.checker`, imported when first asked for (PEP 562)."""
    if name in _FROM_CHECKER:
        from transcoder.auth import checker

        return getattr(checker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Account",
    "AccountsChecker",
    "AccountsFile",
    "DuplicateAccountError",
    "MailRealm",
    "UnknownAccountError",
    "WeakPasswordError",
    "make_portal",
    "normalize_address",
]
