"""Accounts (an scrypt-hashed accounts file) and the Twisted cred checker and realm over them."""

from transcoder.auth.accounts import (
    Account,
    AccountsFile,
    DuplicateAccountError,
    UnknownAccountError,
    WeakPasswordError,
    normalize_address,
)
from transcoder.auth.checker import AccountsChecker, MailRealm, make_portal

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
