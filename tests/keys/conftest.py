"""Key-test helpers, re-exported from :mod:`tests.keyfactory` for older imports.

The ``pgp_keys`` session fixture is defined in :mod:`tests.keyfactory` and
registered for the whole suite in ``tests/conftest.py``, so that the protocol
and integration tests share the one set of generated keys.
"""

from tests.keyfactory import UID_ALICE, GpgHome, PgpKeys

__all__ = ["UID_ALICE", "GpgHome", "PgpKeys"]
