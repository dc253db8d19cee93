"""What every fuzz test here shares: its example budget, a log watch and scratch directories.

The budget follows the hypothesis profile (tests/conftest.py): ``ci``, the
default, runs each test's own small number of examples, the same ones on
every run; ``long`` (``HYPOTHESIS_PROFILE=long``) runs a hundred times as
many, freshly drawn.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import Phase, settings
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

#: Examples per CI example under the profile loaded (``ci``: 1, ``long``: 100).
FACTOR = max(1, settings.default.max_examples // 100)


def scaled(ci_examples: int) -> settings:
    """Hypothesis settings running ``ci_examples`` examples in CI, more under ``long``.

    No shrinking: examples drawn through ``st.randoms()`` shrink slowly (minutes),
    and each assertion names the command or input that failed.
    """
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(max_examples=ci_examples * FACTOR, phases=phases)


class LogWatch:
    """Collects logged tracebacks and critical or error events while it observes."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        """Observer: keep the events that mean something broke."""
        level = event.get("log_level")
        if event.get("log_failure") is not None or level in (LogLevel.critical, LogLevel.error):
            self.events.append(event)

    def problems(self) -> list[str]:
        """The caught events, formatted."""
        return [(formatEvent(e) or repr(e))[:300] for e in self.events]


@contextmanager
def watching_log() -> Iterator[LogWatch]:
    """A :class:`LogWatch` on the global log publisher for the duration of the block."""
    watch = LogWatch()
    globalLogPublisher.addObserver(watch)
    try:
        yield watch
    finally:
        globalLogPublisher.removeObserver(watch)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per hypothesis example (pytest's tmp_path is one per test)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)
