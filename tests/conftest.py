"""Shared pytest configuration."""

# The OpenPGP test keys, generated once per session and used by tests/keys,
# tests/imap (XKEY) and tests/integration.
from tests.keyfactory import pgp_keys

__all__ = ["pgp_keys"]
