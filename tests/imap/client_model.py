"""A pipelining client's model of the selected mailbox, fed with what a server writes.

Checks what a client that pipelines relies on (RFC 3501):

* tagged responses come in the order the commands were sent (section 5.5:
  commands that name sequence numbers, or may expunge, must not be
  reordered);
* no ``* n EXPUNGE`` while a FETCH, STORE or SEARCH is in progress --
  their UID forms may get one (section 7.4.1);
* every ``* n EXPUNGE`` / ``* n FETCH`` names a number within the count the
  client knows, ``EXISTS`` never lowers it (5.2), and a number keeps the
  UID the client saw for it until an EXPUNGE moves it (the sequence
  numbers of every response agree with the client's model);
* ``* SEARCH`` numbers are within the count.

Responses carrying literals are not parsed: the tests using this model
fetch ``UID`` and ``FLAGS`` only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUMBERED = re.compile(rb"\* (\d+) (EXPUNGE|EXISTS|FETCH)\b(.*)$")
_UID = re.compile(rb"\bUID (\d+)")
_SEARCH = re.compile(rb"\* SEARCH((?: \d+)*)$")
_TAGGED = re.compile(rb"([A-Za-z0-9.]+) (OK|NO|BAD)\b")
#: RFC 3501 section 7.4.1: no EXPUNGE response while one of these is in progress.
SEQUENCE_COMMANDS = frozenset({b"FETCH", b"STORE", b"SEARCH"})


class ClientModel:
    """Sequence number -> UID as the client knows it, and its commands in progress."""

    def __init__(self, uids: Iterable[int | None] = ()) -> None:
        self.uids: list[int | None] = list(uids)
        #: ``(tag, command name)`` sent and not answered yet, oldest first.
        self.in_progress: list[tuple[bytes, bytes]] = []
        #: Tags in the order their tagged responses came.
        self.answered: list[bytes] = []
        #: ``tag status`` of every tagged response.
        self.statuses: dict[bytes, bytes] = {}
        #: Every rule broken, with the line that broke it.
        self.errors: list[str] = []
        self._partial = b""

    def pipeline(self, commands: Iterable[tuple[bytes, bytes]]) -> bytes:
        """The octets sending ``(tag, command)`` pairs in one go; they are now in progress."""
        data = b""
        for tag, command in commands:
            words = command.split(b" ", 2)
            name = b" ".join(words[:2]) if words[0].upper() == b"UID" else words[0]
            self.in_progress.append((tag, name.upper()))
            data += tag + b" " + command + b"\r\n"
        return data

    def read(self, output: bytes) -> None:
        """Take in what the server wrote (complete lines; a partial one waits for the rest)."""
        *lines, self._partial = (self._partial + output).split(b"\r\n")
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        tagged = _TAGGED.match(line)
        if tagged and not line.startswith(b"* "):
            self._tagged(tagged.group(1), tagged.group(2), line)
            return
        numbered = _NUMBERED.match(line)
        if numbered:
            number, kind = int(numbered.group(1)), numbered.group(2)
            if kind == b"EXPUNGE":
                self._expunge(number, line)
            elif kind == b"EXISTS":
                self._exists(number, line)
            else:
                self._fetch(number, numbered.group(3), line)
            return
        search = _SEARCH.match(line)
        searching = search and self.in_progress and self.in_progress[0][1] == b"SEARCH"
        if searching and any(int(n) > len(self.uids) for n in search.group(1).split()):
            self.errors.append(f"SEARCH number above the count {len(self.uids)}: {line!r}")

    def _tagged(self, tag: bytes, status: bytes, line: bytes) -> None:
        expected = self.in_progress[0][0] if self.in_progress else None
        if tag != expected:
            self.errors.append(f"{line!r} answered while {expected!r} was the oldest in progress")
        self.in_progress = [c for c in self.in_progress if c[0] != tag]
        self.answered.append(tag)
        self.statuses[tag] = status

    def _expunge(self, number: int, line: bytes) -> None:
        busy = [name for _, name in self.in_progress if name in SEQUENCE_COMMANDS]
        if busy:
            self.errors.append(f"{line!r} while {busy[0]!r} in progress (RFC 3501 7.4.1)")
        if not 1 <= number <= len(self.uids):
            self.errors.append(f"{line!r} beyond the count {len(self.uids)}")
            return
        del self.uids[number - 1]

    def _exists(self, number: int, line: bytes) -> None:
        if number < len(self.uids):
            self.errors.append(f"{line!r} lowers the count {len(self.uids)} (RFC 3501 5.2)")
            del self.uids[number:]
        self.uids.extend([None] * (number - len(self.uids)))

    def _fetch(self, number: int, items: bytes, line: bytes) -> None:
        if not 1 <= number <= len(self.uids):
            self.errors.append(f"{line!r} beyond the count {len(self.uids)}")
            return
        uid = _UID.search(items)
        if uid is None:
            return
        known, seen = self.uids[number - 1], int(uid.group(1))
        if known is not None and known != seen:
            self.errors.append(f"{line!r}: the client knows {number} as UID {known}")
        self.uids[number - 1] = seen
