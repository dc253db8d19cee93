"""The account's subscription list (RFC 3501 sections 6.3.6, 6.3.7, 6.3.9).

Kept Dovecot-style in a ``subscriptions`` file at the account root: one
mailbox name per line, written in modified UTF-7 with ``/`` between levels.
The list is independent of which mailboxes exist: RFC 3501 section 6.3.6
forbids dropping a name just because its mailbox went away.
"""

from __future__ import annotations

from pathlib import Path

from transcoder.errors import MailboxError
from transcoder.files import write_atomically
from transcoder.store.names import decode_mutf7, encode_mutf7, normalize
from transcoder.store.uidlist import FileLock

SUBSCRIPTIONS_FILE = "subscriptions"


class Subscriptions:
    """Read and change the subscription list of one account."""

    def __init__(self, root: Path) -> None:
        self.path = root / SUBSCRIPTIONS_FILE
        self._lock = FileLock(root / (SUBSCRIPTIONS_FILE + ".lock"))

    def names(self) -> list[str]:
        """The subscribed names, in file order (lines that are not valid names are skipped)."""
        try:
            text = self.path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return []
        out: list[str] = []
        for line in text.splitlines():
            try:
                name = normalize(decode_mutf7(line.strip()))
            except (ValueError, MailboxError):
                continue
            if name not in out:
                out.append(name)
        return out

    def _save(self, names: list[str]) -> None:
        data = "".join(encode_mutf7(name) + "\n" for name in names)
        write_atomically(self.path, data.encode("ascii"))

    def add(self, name: str) -> None:
        """Subscribe to ``name`` (already normalised); a repeat is harmless."""
        with self._lock.held():
            names = self.names()
            if name not in names:
                self._save([*names, name])

    def remove(self, name: str) -> None:
        """Unsubscribe from ``name``; MailboxError if it was not subscribed."""
        with self._lock.held():
            names = self.names()
            if name not in names:
                raise MailboxError(f"Not subscribed to {name}")
            self._save([n for n in names if n != name])

    def __contains__(self, name: str) -> bool:
        return name in self.names()
