"""Interfaces of the keystore: blocking (:class:`IKeyStore`) and Deferred-returning.

Every ``now`` is a timezone-aware datetime supplied by the caller (the
injected clock).  ``origin`` is an optional mapping of strings merged into the
audit records an operation writes -- e.g. ``{"peer": "tcp:192.0.2.1:53211",
"via": "imap"}`` -- so the log says who asked.
"""

# zope.interface declares methods without ``self``:
# ruff: noqa: N805

from __future__ import annotations

from zope.interface import Attribute, Interface


class IKeyStore(Interface):
    """The keys and policy of every account (blocking; call off the reactor thread)."""

    audit = Attribute("callable(event: dict) receiving one record per key operation")

    def put(account, key, now, origin=None):
        """Store ValidatedKey ``key`` for ``account`` as ACTIVE; return the StoredKey.

        The account's older ACTIVE key of the same format and role
        (encryption, or signing-only) becomes RETIRED.  Storing a fingerprint
        the account already has refreshes that row and re-activates it.
        """

    def list_keys(account, now):
        """Every key ever stored for ``account`` (``None``: all accounts), oldest first."""

    def get(account, fingerprint, now):
        """The account's key with ``fingerprint`` (any status), or ``None``."""

    def retire(account, fingerprint, now, origin=None):
        """Retire the account's key ``fingerprint``; NoUsableKey if it has no such key."""

    def purge(fingerprint, now, origin=None):
        """Erase every row with ``fingerprint`` (admin); return how many; NoUsableKey if none."""

    def active_key(account, format, now):
        """The newest usable encryption key of ``format`` (``None``: any format), or ``None``.

        Never an expired, retired or signing-only key.
        """

    def get_policy(account, now):
        """The account's Policy, with the format resolved (explicit, else newest key's)."""

    def set_policy(account, now, mode=None, format=None, origin=None):
        """Change mode and/or format; NoUsableKey if the result is ALWAYS without a usable key."""

    def record_refusal(account, error, now, fingerprint=None, origin=None):
        """Audit a refusal decided outside the keystore (a key that failed validation)."""

    def record_event(event, account, now, facts, origin=None):
        """Audit another event decided outside the keystore (a decrypted APPEND)."""

    def view_inputs(account, now, with_keys=True):
        """The account's ViewInputs: its view epoch with the policy and keys it stands for.

        Read in one transaction; see :mod:`transcoder.keys.view_epochs`.
        Every operation above that changes what the account's views are made
        from moves the epoch in its own transaction.
        """

    def view_epoch(account, now):
        """The account's current view epoch (an int, 0 until its views first change)."""

    def note_server_views(settings, now, origin=None):
        """Count views with these ViewSettings from now on, and record them; the epoch
        of each account a changed setting applies to moves at its next read."""


class IAsyncKeyStore(Interface):
    """:class:`IKeyStore` for the reactor thread: the same methods, each returning a Deferred."""

    def put(account, key, now, origin=None):
        """Deferred firing with the StoredKey (see :meth:`IKeyStore.put`)."""

    def list_keys(account, now):
        """Deferred firing with a list of StoredKey."""

    def get(account, fingerprint, now):
        """Deferred firing with a StoredKey or ``None``."""

    def retire(account, fingerprint, now, origin=None):
        """Deferred firing with the retired StoredKey."""

    def purge(fingerprint, now, origin=None):
        """Deferred firing with the number of rows erased."""

    def active_key(account, format, now):
        """Deferred firing with a StoredKey or ``None``."""

    def get_policy(account, now):
        """Deferred firing with the Policy."""

    def set_policy(account, now, mode=None, format=None, origin=None):
        """Deferred firing with the new Policy."""

    def record_refusal(account, error, now, fingerprint=None, origin=None):
        """Deferred firing with ``None`` once the refusal is audited."""

    def record_event(event, account, now, facts, origin=None):
        """Deferred firing with ``None`` once the event is audited."""

    def view_inputs(account, now, with_keys=True):
        """Deferred firing with the account's ViewInputs."""

    def view_epoch(account, now):
        """Deferred firing with the account's view epoch."""

    def run(function, *args, **kwargs):
        """Deferred firing with ``function(*args, **kwargs)`` run in the keystore's pool.

        For other blocking key work, such as validation (gpg subprocesses).
        """
