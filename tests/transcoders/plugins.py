"""Real plugin distributions on a temporary sys.path entry, for entry-point discovery tests.

importlib.metadata finds a distribution by its ``*.dist-info`` directory on
any sys.path entry and reads its ``entry_points.txt``: exactly what pip
leaves behind, so these tests exercise the real discovery mechanism.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping
from pathlib import Path

_serial = itertools.count()

#: A minimal transcoder a plugin module can define (pure, no crypto: registry tests only).
TRANSCODER_SOURCE = """
from zope.interface import implementer
from transcoder.keys.model import KeyFormat
from transcoder.transcoders.interfaces import ITranscoder, TranscodeResult
from transcoder.transcoders.errors import TranscodeFailed


@implementer(ITranscoder)
class Named:
    media_type = "application/x-test"
    settings_id = "v1"

    def __init__(self, name="plugin", key_format=KeyFormat.OPENPGP):
        self.name = name
        self.key_format = key_format

    def can_serve(self, keys):
        return False

    def transcode(self, request, out):
        raise TranscodeFailed("test plugin")
"""


def unique(prefix: str) -> str:
    """A module or distribution name no other test uses (sys.modules caches imports)."""
    return f"{prefix}_{next(_serial)}"


def install_plugin(site: Path, modules: Mapping[str, str], entry_points: Mapping[str, str]) -> str:
    """Write ``modules`` and a distribution declaring ``entry_points`` into ``site``.

    ``entry_points`` maps entry-point names to ``module:attribute``; returns
    the distribution name.
    """
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    dist = unique("plugin_dist")
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[transcoder.transcoders]\n{lines}")
    return dist
