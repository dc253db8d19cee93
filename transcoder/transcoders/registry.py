"""The set of transcoders a server can use: built-ins plus entry-point plugins.

Built by ``makeService`` and handed down (no module globals).  Third-party
transcoders register in the ``transcoder.transcoders`` entry-point group; an
entry point names either an :class:`~transcoder.transcoders.interfaces.ITranscoder`
provider or a factory called with no arguments that returns one::

    [project.entry-points."transcoder.transcoders"]
    rot13-demo = "rot13_transcoder:Rot13Transcoder"

A plugin that fails to import, to build or to provide the interface is
skipped and reported back as a :class:`LoadFailure` for the caller to log
(this package stays free of twisted and of logging).  Two transcoders with
the same name are a configuration error: the server refuses to start rather
than guess which one a user's mail goes through.

No twisted import here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from transcoder.errors import ConfigurationError
from transcoder.keys.model import KeyFormat
from transcoder.transcoders.interfaces import ITranscoder, Transcoder

#: The entry-point group third-party transcoders register in.
GROUP = "transcoder.transcoders"
_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}\Z")


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that was skipped: which entry point (``name = value``) and why."""

    entry_point: str
    reason: str


def check_transcoder(candidate: object) -> str | None:
    """Why ``candidate`` is not a usable transcoder, or ``None`` when it is."""
    try:
        verifyObject(ITranscoder, candidate)
    except Invalid as e:
        return f"does not provide ITranscoder: {e}"
    transcoder = cast(Transcoder, candidate)
    if not isinstance(transcoder.name, str) or not _NAME.match(transcoder.name):
        return f"name {transcoder.name!r} is not a lowercase token"
    if not isinstance(transcoder.media_type, str) or "/" not in transcoder.media_type:
        return f"media_type {transcoder.media_type!r} is not a media type"
    if not isinstance(transcoder.key_format, KeyFormat):
        return f"key_format {transcoder.key_format!r} is not a KeyFormat"
    if not isinstance(transcoder.settings_id, str):
        return "settings_id is not a str"
    return None


def load_entry_point(entry_point: EntryPoint) -> Transcoder:
    """The transcoder an entry point names (a provider, or a factory of one); raises on failure."""
    loaded = entry_point.load()
    if not ITranscoder.providedBy(loaded):
        if not callable(loaded):
            raise TypeError(f"{loaded!r} is neither an ITranscoder nor a factory of one")
        loaded = loaded()
    problem = check_transcoder(loaded)
    if problem is not None:
        raise TypeError(problem)
    return cast(Transcoder, loaded)


class TranscoderRegistry:
    """Transcoders by unique name, in the order they were added (built-ins first)."""

    def __init__(self, transcoders: Iterable[Transcoder] = ()) -> None:
        self._by_name: dict[str, Transcoder] = {}
        for transcoder in transcoders:
            self.add(transcoder)

    def add(self, transcoder: Transcoder) -> None:
        """Register ``transcoder``; ConfigurationError when invalid or its name is taken."""
        problem = check_transcoder(transcoder)
        if problem is not None:
            raise ConfigurationError(f"transcoder {transcoder!r} {problem}")
        if transcoder.name in self._by_name:
            raise ConfigurationError(f"two transcoders are named {transcoder.name!r}")
        self._by_name[transcoder.name] = transcoder

    @classmethod
    def from_entry_points(
        cls,
        builtins: Iterable[Transcoder],
        plugins: Iterable[EntryPoint] | None = None,
    ) -> tuple[TranscoderRegistry, tuple[LoadFailure, ...]]:
        """The built-ins plus every loadable plugin, and the plugins that were skipped.

        ``plugins`` defaults to the installed ``transcoder.transcoders``
        entry points (:func:`importlib.metadata.entry_points`), taken in
        name order so the result does not depend on ``sys.path`` order.
        Raises ConfigurationError when two transcoders share a name.
        """
        registry = cls(builtins)
        found = entry_points(group=GROUP) if plugins is None else plugins
        failures: list[LoadFailure] = []
        for entry_point in sorted(found, key=lambda ep: (ep.name, ep.value)):
            label = f"{entry_point.name} = {entry_point.value}"
            try:
                transcoder = load_entry_point(entry_point)
            except Exception as e:  # plugin code may raise anything: skip it, report why
                failures.append(LoadFailure(label, f"{type(e).__name__}: {e}"))
                continue
            registry.add(transcoder)
        return registry, tuple(failures)

    def get(self, name: str) -> Transcoder | None:
        """The transcoder called ``name``, or ``None``."""
        return self._by_name.get(name)

    def for_format(self, key_format: KeyFormat) -> tuple[Transcoder, ...]:
        """The transcoders that encrypt to ``key_format`` keys, in registration order."""
        return tuple(t for t in self._by_name.values() if t.key_format is key_format)

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._by_name)

    def __iter__(self) -> Iterator[Transcoder]:
        return iter(tuple(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


__all__ = [
    "GROUP",
    "LoadFailure",
    "TranscoderRegistry",
    "check_transcoder",
    "load_entry_point",
]
