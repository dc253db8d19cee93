"""Which transcoder, and which keys, serve an account's FETCHes: a pure decision.

Given the account's policy, its keys and the registry, :func:`select_transcoder`
answers ``None`` (policy OFF: serve the stored message) or a
:class:`Selection`; under ``MODE ALWAYS`` it never silently falls back to
plaintext (docs/design.md invariant 3): no usable key raises
:class:`~transcoder.keys.errors.NoUsableKey` (``NO [XKEY-NOKEY]``), no
transcoder for the format raises
:class:`~transcoder.transcoders.errors.TranscodeFailed`.

No twisted import here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from transcoder.keys.errors import NoUsableKey
from transcoder.keys.model import KeyFormat, KeyStatus, Policy, PolicyMode, StoredKey
from transcoder.keys.policy import missing_key_message
from transcoder.transcoders.errors import TranscodeFailed
from transcoder.transcoders.interfaces import Transcoder, ViewSigner
from transcoder.transcoders.registry import TranscoderRegistry


def usable_keys(
    keys: Iterable[StoredKey], key_format: KeyFormat, now: datetime
) -> tuple[StoredKey, ...]:
    """The keys of ``key_format`` the server may encrypt to at ``now``, newest first.

    Active (not retired, not reported expired), with encryption usage, and
    not past ``not_after`` at ``now``.
    """
    usable = [
        k
        for k in keys
        if k.format is key_format
        and k.status is KeyStatus.ACTIVE
        and k.can_encrypt
        and not k.expired_at(now)
    ]
    usable.sort(key=lambda k: k.activated_at, reverse=True)
    return tuple(usable)


@dataclass(frozen=True)
class Selection:
    """The transcoder chosen for an account, the keys it encrypts to and, when the
    account's views are signed (``SIGN ON``), the server key that signs them."""

    transcoder: Transcoder
    keys: tuple[StoredKey, ...]
    signer: ViewSigner | None = None

    @property
    def key_id(self) -> str:
        """The keys' fingerprints, sorted and comma-joined: the key part of a view-cache key."""
        return ",".join(sorted(k.fingerprint for k in self.keys))

    @property
    def view_id(self) -> str:
        """Transcoder name, settings and keys: what makes two views of one message differ."""
        signed = f"|signed={self.signer.fingerprint}" if self.signer is not None else ""
        return f"{self.transcoder.name}|{self.transcoder.settings_id}|{self.key_id}{signed}"


def select_transcoder(
    policy: Policy, keys: Iterable[StoredKey], registry: TranscoderRegistry, now: datetime
) -> Selection | None:
    """The transcoder and keys for ``policy``; ``None`` when the policy is OFF."""
    if policy.mode is PolicyMode.OFF:
        return None
    if policy.format is None:
        raise NoUsableKey(missing_key_message(policy))
    usable = usable_keys(keys, policy.format, now)
    if not usable:
        raise NoUsableKey(missing_key_message(policy))
    for transcoder in registry.for_format(policy.format):
        if transcoder.can_serve(usable):
            return Selection(transcoder, usable)
    raise TranscodeFailed(f"no registered transcoder serves these {policy.format.value} keys")


__all__ = ["Selection", "select_transcoder", "usable_keys"]
