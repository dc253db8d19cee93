"""The transcoder registry: built-ins, entry-point plugins, duplicates and broken plugins."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from zope.interface import implementer

from tests.transcoders.plugins import TRANSCODER_SOURCE, install_plugin, unique
from transcoder.errors import ConfigurationError
from transcoder.keys.model import KeyFormat, StoredKey
from transcoder.transcoders import (
    GROUP,
    ITranscoder,
    TranscodeFailed,
    TranscodeRequest,
    TranscodeResult,
    TranscoderRegistry,
    check_transcoder,
)


@implementer(ITranscoder)
class Builtin:
    """A minimal built-in stand-in (the registry only reads the declared attributes)."""

    media_type = "application/x-builtin"
    settings_id = "v1"

    def __init__(self, name: str, key_format: KeyFormat = KeyFormat.SMIME) -> None:
        self.name = name
        self.key_format = key_format

    def can_serve(self, keys: Sequence[StoredKey]) -> bool:
        return False

    def transcode(self, request: TranscodeRequest, out: BinaryIO) -> TranscodeResult:
        raise TranscodeFailed("stand-in")


def test_builtins_are_registered_in_order() -> None:
    """Built-ins are found by name and by key format, in the order given."""
    a, b, c = Builtin("smime"), Builtin("pgp-mime", KeyFormat.OPENPGP), Builtin("smime-2")
    registry = TranscoderRegistry([a, b, c])
    assert registry.names() == ("smime", "pgp-mime", "smime-2")
    assert registry.get("pgp-mime") is b and registry.get("nope") is None
    assert registry.for_format(KeyFormat.SMIME) == (a, c)
    assert list(registry) == [a, b, c] and len(registry) == 3 and "smime" in registry


def test_duplicate_builtin_names_raise() -> None:
    """Two transcoders with one name are a configuration error."""
    with pytest.raises(ConfigurationError, match="smime"):
        TranscoderRegistry([Builtin("smime"), Builtin("smime", KeyFormat.OPENPGP)])


def test_invalid_builtin_raises() -> None:
    """A built-in that does not provide ITranscoder is refused."""
    with pytest.raises(ConfigurationError, match="ITranscoder"):
        TranscoderRegistry([object()])  # type: ignore[list-item]


def test_check_transcoder_explains_bad_attributes() -> None:
    """Names must be lowercase tokens, key_format a KeyFormat, media_type a type/subtype."""
    assert check_transcoder(Builtin("ok-1.2")) is None
    assert "name" in (check_transcoder(Builtin("Bad Name")) or "")
    bad_format = Builtin("x")
    bad_format.key_format = "SMIME"  # type: ignore[assignment]
    assert "key_format" in (check_transcoder(bad_format) or "")
    bad_type = Builtin("y")
    bad_type.media_type = "nonsense"
    assert "media_type" in (check_transcoder(bad_type) or "")


def test_entry_points_are_discovered_from_installed_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin distribution on sys.path is loaded: a class (factory) and a ready instance."""
    module = unique("good_plugin")
    source = TRANSCODER_SOURCE + "\nINSTANCE = Named('ready-made', KeyFormat.SMIME)\n"
    install_plugin(
        tmp_path,
        {module: source},
        {"by-class": f"{module}:Named", "by-instance": f"{module}:INSTANCE"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry, failures = TranscoderRegistry.from_entry_points([Builtin("smime")])
    assert failures == ()
    assert registry.names()[0] == "smime"
    assert {"plugin", "ready-made"} <= set(registry.names())
    assert type(registry.get("plugin")).__module__ == module
    assert [t.name for t in registry.for_format(KeyFormat.SMIME)][:2] == ["smime", "ready-made"]


def test_broken_plugins_are_skipped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Import errors, non-transcoders and failing factories are skipped, each with a reason."""
    broken, wrong, good = unique("broken"), unique("wrong"), unique("good")
    modules = {
        broken: "raise ImportError('needs libfoo')\n",
        wrong: "THING = 42\n\ndef factory():\n    return object()\n\n"
        "def exploding():\n    raise RuntimeError('no config')\n",
        good: TRANSCODER_SOURCE,
    }
    install_plugin(
        tmp_path,
        modules,
        {
            "a-import": f"{broken}:Named",
            "b-number": f"{wrong}:THING",
            "c-factory": f"{wrong}:factory",
            "d-exploding": f"{wrong}:exploding",
            "e-missing": f"{good}:Absent",
            "f-good": f"{good}:Named",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry, failures = TranscoderRegistry.from_entry_points([Builtin("smime")])
    assert "plugin" in registry and "smime" in registry
    reasons = {f.entry_point.split(" = ")[0]: f.reason for f in failures}
    assert set(reasons) == {"a-import", "b-number", "c-factory", "d-exploding", "e-missing"}
    assert "needs libfoo" in reasons["a-import"]
    assert "neither" in reasons["b-number"]
    assert "ITranscoder" in reasons["c-factory"]
    assert "no config" in reasons["d-exploding"]
    assert reasons["e-missing"].startswith("AttributeError")


def test_plugin_reusing_a_builtin_name_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin named like a built-in stops start-up instead of shadowing it."""
    module = unique("shadow")
    source = TRANSCODER_SOURCE + "\nSHADOW = Named('smime', KeyFormat.SMIME)\n"
    install_plugin(tmp_path, {module: source}, {"smime": f"{module}:SHADOW"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match="'smime'"):
        TranscoderRegistry.from_entry_points([Builtin("smime")])


def test_two_plugins_with_one_name_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two distributions declaring transcoders of one name are a configuration error."""
    first, second = unique("first"), unique("second")
    install_plugin(tmp_path, {first: TRANSCODER_SOURCE}, {"one": f"{first}:Named"})
    install_plugin(tmp_path, {second: TRANSCODER_SOURCE}, {"two": f"{second}:Named"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match="'plugin'"):
        TranscoderRegistry.from_entry_points([])


def test_group_name() -> None:
    """Plugins register under the documented entry-point group."""
    assert GROUP == "transcoder.transcoders"
