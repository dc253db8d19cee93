"""What each load-generator client checks in the responses it reads (sans-IO).

A :class:`ProtocolChecker` follows one connection: the commands in progress
(sent, no tagged response yet) and a :class:`MailboxView` of the selected
mailbox -- the message count and the sequence-number -> UID map built from
``EXISTS``, ``EXPUNGE`` and ``FETCH (UID ...)`` responses, the keywords the
latest ``FLAGS`` announced, the UIDs this session saw expunged.  Every
inconsistency is recorded in the run's :class:`ErrorLog` under a fixed kind
naming the rule broken:

* ``* n EXPUNGE`` while a FETCH, STORE or SEARCH (not the UID forms) of this
  client is in progress, or while no command is (RFC 3501 7.4.1); ``n``
  above the message count; ``* n EXISTS`` lowering the count (5.2);
* ``* n FETCH`` for ``n`` above the count; a UID that differs from the one
  already known for ``n``, breaks the strict ascending order of the map, or
  was expunged before (2.3.1.1: UIDs are never reused in a UIDVALIDITY);
* a keyword in ``FETCH ... FLAGS`` that the latest ``* FLAGS`` did not name
  (7.2.6, system flags excepted);
* ``SEARCH`` numbers above the count, ``UID SEARCH`` naming an expunged UID;
* ``APPENDUID`` (RFC 4315) naming a UID not above those already known;
* ``BODY[]`` whose length is not the ``RFC822.SIZE`` given for the message;
  the FETCH answering ``STORE +FLAGS`` without the flag stored;
* a tagged response for no command in progress, a command left without one
  (timeout, connection closed), a continuation request nobody waits for, a
  ``BYE`` not asked for, a response that does not parse;
* a ``NO`` or ``BAD`` to a command that should succeed: counted with the
  command and the text.  ``NO [EXPUNGEISSUED]`` (RFC 2180 4.1.2, a message
  another session expunged) is counted apart: allowed, not an error.

A command counts as in progress from the moment it is written (a pipeline
is written in one piece) until its tagged response.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from load_wire import Response, Token, WireError, code_name, fetch_items, tokens

#: RFC 3501 section 2.3.2: flags that need no announcement.
SYSTEM_FLAGS = frozenset(
    (b"\\seen", b"\\answered", b"\\flagged", b"\\deleted", b"\\draft", b"\\recent")
)
#: RFC 3501 7.4.1: no EXPUNGE response while one of these is in progress.
SEQUENCE_COMMANDS = frozenset(("FETCH", "STORE", "SEARCH"))
#: Dovecot's timings "(0.001 + 0.000 secs)." and numbers, blanked to group alike texts.
_TIMINGS = re.compile(rb" ?\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)\.?")
_NUMBERS = re.compile(rb"\d+")


class ErrorLog:
    """Protocol errors of one run, counted by kind, with the first example of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.expunge_issued: Counter[str] = Counter()

    def add(self, kind: str, example: str) -> None:
        """Count one error of ``kind``; keep ``example`` if it is the first."""
        self.counts[kind] += 1
        self.examples.setdefault(kind, example)

    @property
    def total(self) -> int:
        """Errors of every kind."""
        return sum(self.counts.values())


@dataclass
class Command:
    """A command sent, waiting for its tagged response."""

    tag: bytes
    name: str  # "FETCH", "UID SEARCH", ...
    label: str  # what the statistics call it: "FETCH body"
    line: bytes  # the command line as sent (for examples)
    sent_at: float = 0.0
    #: (sequence number, flag) that ``STORE +FLAGS`` set; the flags a FETCH then showed.
    stored: tuple[int, bytes] | None = None
    flags_seen: frozenset[bytes] | None = None


@dataclass
class MailboxView:
    """One session's picture of its selected mailbox."""

    uids: list[int | None] = field(default_factory=list)
    announced: frozenset[bytes] = frozenset()
    expunged: set[int] = field(default_factory=set)
    sizes: dict[int, int] = field(default_factory=dict)
    lengths: dict[int, int] = field(default_factory=dict)
    flags: dict[int, frozenset[bytes]] = field(default_factory=dict)
    uidvalidity: bytes | None = None

    @property
    def count(self) -> int:
        """The number of messages, as the server last said."""
        return len(self.uids)

    def known(self) -> list[tuple[int, int]]:
        """(sequence number, UID) of every message whose UID is known."""
        return [(n + 1, u) for n, u in enumerate(self.uids) if u is not None]


def _example(command: Command | None, response: Response) -> str:
    """A short description of where an error was seen."""
    raw = f"{response.tag.decode() if response.tag else '*'} "
    raw += f"{response.number} " if response.number is not None else ""
    raw += response.name.decode() + " "
    raw += (b"[" + response.code + b"] " if response.code else b"").decode(errors="replace")
    raw += (response.text or response.data)[:120].decode(errors="replace")
    during = f" during {command.line[:80].decode(errors='replace')}" if command else ""
    return raw.strip() + during


def normalise(text: bytes) -> str:
    """Response text with numbers and Dovecot's timings blanked, to group alike errors."""
    return _NUMBERS.sub(b"N", _TIMINGS.sub(b"", text)).decode(errors="replace").strip()


class ProtocolChecker:
    """The consistency checks of one connection; see the module docstring."""

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        self.in_progress: dict[bytes, Command] = {}
        self.view: MailboxView | None = None
        self.logging_out = False

    # -- the client's side ---------------------------------------------------

    def sent(self, command: Command) -> None:
        """``command`` was written: it is in progress."""
        if command.name in ("SELECT", "EXAMINE"):
            self.view = MailboxView()
        if command.name == "LOGOUT":
            self.logging_out = True
        self.in_progress[command.tag] = command

    def abandon(self, why: str) -> None:
        """The connection is gone: every command still in progress is an error."""
        for command in self.in_progress.values():
            self.errors.add(f"no tagged response ({why})", command.line[:80].decode())
        self.in_progress.clear()

    # -- the server's side ---------------------------------------------------

    def tagged(self, response: Response) -> Command | None:
        """Check a tagged response; return the command it completes, if any."""
        assert response.tag is not None
        command = self.in_progress.pop(response.tag, None)
        if command is None:
            self.errors.add("tagged response for no command in progress", _example(None, response))
            return None
        if response.name == b"OK":
            self._check_store(command, response)
            if code_name(response.code) == b"APPENDUID":
                self._check_appenduid(response)
        elif code_name(response.code) == b"EXPUNGEISSUED":
            self.errors.expunge_issued[f"NO [EXPUNGEISSUED] to {command.name}"] += 1
        else:
            what = f"{response.name.decode()} to {command.name}: "
            code = f"[{code_name(response.code).decode()}] " if response.code else ""
            self.errors.add(what + code + normalise(response.text), _example(command, response))
        return command

    def continuation(self, response: Response, awaited: bool) -> None:
        """A ``+`` response; an error unless the client waits for one."""
        if not awaited:
            self.errors.add("continuation request nobody waits for", _example(None, response))

    def unparsable(self, detail: str) -> None:
        """A response that does not parse."""
        self.errors.add("unparsable response", detail[:160])

    def untagged(self, response: Response) -> None:
        """Check an untagged response against the view and the commands in progress."""
        try:
            self._untagged(response)
        except (WireError, ValueError, IndexError) as e:
            self.unparsable(f"{e}: {_example(None, response)}")

    def _untagged(self, response: Response) -> None:
        name = response.name
        if name == b"BYE" and not self.logging_out:
            self.errors.add(
                "BYE not asked for: " + normalise(response.text), _example(None, response)
            )
        elif name in (b"NO", b"BAD"):
            self.errors.add(
                f"untagged {name.decode()}: {normalise(response.text)}", _example(None, response)
            )
        if self.view is None:
            return
        if name == b"OK" and code_name(response.code) == b"UIDVALIDITY":
            self._uidvalidity(response)
        elif name == b"EXISTS":
            self._exists(response)
        elif name == b"EXPUNGE":
            self._expunge(response)
        elif name == b"FETCH":
            self._fetch(response)
        elif name == b"FLAGS":
            words = tokens(response.data)
            flags = words[0] if words and isinstance(words[0], list) else []
            self.view.announced = frozenset(f.lower() for f in flags if isinstance(f, bytes))
        elif name == b"SEARCH":
            self._search(response)

    def _uidvalidity(self, response: Response) -> None:
        assert self.view is not None and response.code is not None
        value = response.code.split()[1]
        if self.view.uidvalidity not in (None, value):
            self.errors.add("UIDVALIDITY changed in a session", _example(None, response))
        self.view.uidvalidity = value

    def _exists(self, response: Response) -> None:
        assert self.view is not None and response.number is not None
        view = self.view
        if response.number < view.count:
            self.errors.add(
                "EXISTS lowers the message count (RFC 3501 5.2)", _example(None, response)
            )
            del view.uids[response.number :]
        view.uids.extend([None] * (response.number - view.count))

    def _expunge(self, response: Response) -> None:
        assert self.view is not None and response.number is not None
        busy = [c for c in self.in_progress.values() if c.name in SEQUENCE_COMMANDS]
        if busy:
            self.errors.add(
                f"EXPUNGE while {busy[0].name} in progress (RFC 3501 7.4.1)",
                _example(busy[0], response),
            )
        elif not self.in_progress:
            self.errors.add(
                "EXPUNGE with no command in progress (RFC 3501 7.4.1)", _example(None, response)
            )
        n = response.number
        if not 1 <= n <= self.view.count:
            self.errors.add("EXPUNGE of a number above the message count", _example(None, response))
            return
        uid = self.view.uids.pop(n - 1)
        if uid is not None:
            self.view.expunged.add(uid)

    def _fetch(self, response: Response) -> None:
        assert self.view is not None and response.number is not None
        view, n = self.view, response.number
        if not 1 <= n <= view.count:
            self.errors.add("FETCH of a number above the message count", _example(None, response))
            return
        items = fetch_items(response.data)
        uid = self._place_uid(n, items.get(b"UID"), response)
        if uid is None:
            return
        flags = items.get(b"FLAGS")
        if isinstance(flags, list):
            self._check_flags(uid, n, flags, response)
        self._check_size(uid, items, response)

    def _place_uid(self, n: int, value: Token | None, response: Response) -> int | None:
        """The UID of message ``n``, checking a UID the response gives against the map."""
        assert self.view is not None
        view = self.view
        if not isinstance(value, bytes):
            return view.uids[n - 1]
        uid = int(value)
        if view.uids[n - 1] == uid:
            return uid
        if view.uids[n - 1] is not None:
            self.errors.add(
                "UID of a sequence number changed without EXPUNGE", _example(None, response)
            )
        elif uid in view.expunged:
            self.errors.add(
                "an expunged UID reappeared (RFC 3501 2.3.1.1)", _example(None, response)
            )
        elif not self._ascending(n, uid):
            self.errors.add(
                "UIDs not strictly ascending (RFC 3501 2.3.1.1)", _example(None, response)
            )
        view.uids[n - 1] = uid
        return uid

    def _ascending(self, n: int, uid: int) -> bool:
        """Whether ``uid`` at ``n`` keeps the known UIDs strictly ascending."""
        assert self.view is not None
        uids = self.view.uids
        before = next((u for u in reversed(uids[: n - 1]) if u is not None), 0)
        after = next((u for u in uids[n:] if u is not None), None)
        return before < uid and (after is None or uid < after)

    def _check_flags(self, uid: int, n: int, flags: list[Token], response: Response) -> None:
        assert self.view is not None
        seen = frozenset(f.lower() for f in flags if isinstance(f, bytes))
        unknown = sorted(seen - SYSTEM_FLAGS - self.view.announced)
        if unknown:
            self.errors.add(
                "keyword in FETCH FLAGS not announced by FLAGS (RFC 3501 7.2.6)",
                _example(None, response)
                + f" (announced: {b' '.join(sorted(self.view.announced)).decode()})",
            )
        self.view.flags[uid] = seen
        # Commands run in order: a STORE's FETCH comes while it is the oldest in progress.
        oldest = next(iter(self.in_progress.values()), None)
        if oldest is not None and oldest.stored is not None and oldest.stored[0] == n:
            oldest.flags_seen = seen

    def _check_size(self, uid: int, items: dict[bytes, Token], response: Response) -> None:
        """RFC822.SIZE and the length of BODY[] agree, whichever came first."""
        assert self.view is not None
        view = self.view
        size, body = items.get(b"RFC822.SIZE"), items.get(b"BODY[]")
        if isinstance(size, bytes):
            view.sizes[uid] = int(size)
        if isinstance(body, bytes):
            view.lengths[uid] = len(body)
        if uid in view.sizes and uid in view.lengths and view.sizes[uid] != view.lengths[uid]:
            self.errors.add(
                "BODY[] length differs from RFC822.SIZE (RFC 3501 6.4.5)",
                f"UID {uid}: RFC822.SIZE {view.sizes.pop(uid)}, BODY[] {view.lengths.pop(uid)}",
            )

    def _search(self, response: Response) -> None:
        assert self.view is not None
        numbers = [int(x) for x in response.data.split()]
        names = {c.name for c in self.in_progress.values()}
        if "UID SEARCH" in names:
            gone = [u for u in numbers if u in self.view.expunged]
            if gone:
                self.errors.add("UID SEARCH names an expunged UID", _example(None, response))
        elif "SEARCH" in names and any(not 1 <= n <= self.view.count for n in numbers):
            self.errors.add(
                "SEARCH names a number above the message count", _example(None, response)
            )

    def _check_appenduid(self, response: Response) -> None:
        """RFC 4315 APPENDUID: a new UID, above every UID the session knows (RFC 3501 2.3.1.1)."""
        assert response.code is not None
        view = self.view
        _, validity, uid = response.code.split()[:3]
        if view is None or validity != view.uidvalidity or not uid.isdigit():
            return
        known = [u for u in view.uids if u is not None]
        if int(uid) in view.expunged or (known and int(uid) <= max(known)):
            self.errors.add(
                "APPENDUID not above the UIDs already assigned (RFC 3501 2.3.1.1)",
                _example(None, response) + f" (highest known UID {max(known, default=0)})",
            )

    def _check_store(self, command: Command, response: Response) -> None:
        """``STORE +FLAGS``: the FETCH it caused, if any, shows the flag stored."""
        if command.stored is None or command.flags_seen is None:
            return
        if command.stored[1].lower() not in command.flags_seen:
            shown = b" ".join(sorted(command.flags_seen)).decode()
            self.errors.add(
                "FETCH after STORE +FLAGS lacks the flag stored",
                f"{command.line.decode()}: FLAGS ({shown})",
            )
