"""LIST/LSUB patterns (RFC 3501 section 6.3.8), matched in linear time.

A pattern is literal text with two wildcards: ``*`` matches any characters,
``%`` any characters except the hierarchy delimiter; the match is anchored
at both ends.  Turning that into a Python regular expression (``.*`` and
``[^/]*``) lets a client send ``%%%%%%%%%%%%%%Z``, which the backtracking
engine tries in exponentially many ways on a long mailbox name while the
whole server waits (issue 8, item 1).  Here a pattern cannot backtrack:

* runs of wildcards collapse (``%%`` is ``%``; any run holding a ``*`` is
  ``*``), which does not change what matches;
* the literal text before the first and after the last wildcard is checked
  with ``startswith``/``endswith``; what lies between, ``%`` alone or ``*``
  alone, is decided by one scan;
* anything else runs as a set-of-states automaton (one bit per pattern
  position, in a Python int): one pass over the name, each character
  updating every state at once, so the cost is O(len(name) x len(pattern)
  / word size) whatever the pattern.

Patterns are also capped (:data:`MAX_PATTERN_LENGTH` characters,
:data:`MAX_WILDCARDS` wildcards, reference included): beyond that the client
gets ``BAD [LIMIT]`` (:class:`~transcoder.errors.PatternTooComplex`).

Pure functions over ``str``; no twisted import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from transcoder.errors import PatternTooComplex

#: Longest reference + pattern accepted, in characters.  Mailbox names are
#: at most a 255-octet directory name, so longer patterns serve no client.
MAX_PATTERN_LENGTH = 1024
#: Most ``*`` and ``%`` accepted in reference + pattern (before collapsing).
#: Real clients send one or two.
MAX_WILDCARDS = 64
WILDCARDS = "*%"


def collapse(pattern: str) -> str:
    """``pattern`` with each run of wildcards as one: ``*`` if the run holds one, else ``%``.

    ``%*``, ``*%`` and ``**`` match what ``*`` matches; ``%%`` what ``%`` does.
    """
    out: list[str] = []
    run = ""
    for ch in pattern:
        if ch in WILDCARDS:
            run += ch
            continue
        if run:
            out.append("*" if "*" in run else "%")
            run = ""
        out.append(ch)
    if run:
        out.append("*" if "*" in run else "%")
    return "".join(out)


def check_limits(pattern: str) -> None:
    """Raise :class:`PatternTooComplex` when ``pattern`` is over the caps."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternTooComplex(f"LIST pattern longer than {MAX_PATTERN_LENGTH} characters")
    wildcards = sum(pattern.count(w) for w in WILDCARDS)
    if wildcards > MAX_WILDCARDS:
        raise PatternTooComplex(f"LIST pattern with more than {MAX_WILDCARDS} wildcards")


@dataclass(frozen=True)
class ListPattern:
    """A compiled LIST pattern: :meth:`matches` decides one name in linear time.

    ``prefix`` and ``suffix`` are the literal text before the first and
    after the last wildcard; ``middle`` is the collapsed rest, which starts
    and ends with a wildcard (empty when the pattern has none, and then
    ``prefix`` is the whole pattern).
    """

    prefix: str
    middle: str
    suffix: str
    delimiter: str = "/"
    #: Per literal character, the bit of each middle position holding it.
    _literal: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)
    _star: int = field(default=0, repr=False, compare=False)
    _percent: int = field(default=0, repr=False, compare=False)

    @classmethod
    def compile(cls, pattern: str, delimiter: str = "/") -> ListPattern:
        """The matcher of ``pattern`` (reference already prefixed); caps checked."""
        check_limits(pattern)
        collapsed = collapse(pattern)
        first = min((i for i in map(collapsed.find, WILDCARDS) if i >= 0), default=-1)
        if first < 0:
            return cls(collapsed, "", "", delimiter)
        last = max(collapsed.rfind(w) for w in WILDCARDS)
        middle = collapsed[first : last + 1]
        literal, star, percent = _masks(middle)
        prefix, suffix = collapsed[:first], collapsed[last + 1 :]
        return cls(prefix, middle, suffix, delimiter, literal, star, percent)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is selected (RFC 3501 section 6.3.8)."""
        if not self.middle:
            return name == self.prefix
        inner = len(name) - len(self.prefix) - len(self.suffix)
        if inner < 0 or not name.startswith(self.prefix) or not name.endswith(self.suffix):
            return False
        text = name[len(self.prefix) : len(self.prefix) + inner]
        if self.middle == "*":
            return True
        if self.middle == "%":
            return self.delimiter not in text
        return self._run(text)

    def _run(self, text: str) -> bool:
        # State bit i: the first i characters of ``middle`` match what was
        # read.  On each character a literal moves its state one on, ``*``
        # keeps its state, ``%`` keeps it unless the character is the
        # delimiter.  A wildcard may match nothing, so a state before one
        # also stands after it: one shift, as collapsed wildcards are never
        # adjacent.  ``middle`` ends with a wildcard, so the state past its
        # end is set whenever the text matched.
        literal, star, percent, delimiter = self._literal, self._star, self._percent, self.delimiter
        wild = star | percent
        states = 1 | (1 & wild) << 1
        for ch in text:
            keep = star if ch == delimiter else wild
            states = (states & literal.get(ch, 0)) << 1 | (states & keep)
            if not states:
                return False
            states |= (states & wild) << 1
        return bool(states >> len(self.middle) & 1)

    def select(self, names: Iterable[str]) -> list[str]:
        """The names among ``names`` that match, in order."""
        return [name for name in names if self.matches(name)]


def _masks(middle: str) -> tuple[dict[str, int], int, int]:
    """Bit masks of ``middle``'s positions: per literal character, ``*``, ``%``."""
    literal: dict[str, int] = {}
    star = percent = 0
    for i, ch in enumerate(middle):
        if ch == "*":
            star |= 1 << i
        elif ch == "%":
            percent |= 1 << i
        else:
            literal[ch] = literal.get(ch, 0) | 1 << i
    return literal, star, percent
