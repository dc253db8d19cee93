"""``--openpgp-encoder``: the native encoder by default, gpg for every message on request."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from transcoder.keys.model import KeyFormat
from transcoder.layers import transcoding_layer
from transcoder.service import Options


def options(tmp_path: Path, *args: str) -> Options:
    parsed = Options()
    parsed.parseOptions(["--data", str(tmp_path), *args])
    return parsed


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ((), ("pgp-mime", "pgp-mime-gpg")),
        (("--openpgp-encoder", "native"), ("pgp-mime", "pgp-mime-gpg")),
        (("--openpgp-encoder", "gpg"), ("pgp-mime-gpg",)),
    ],
)
def test_openpgp_transcoders_in_selection_order(
    tmp_path: Path, args: tuple[str, ...], names: tuple[str, ...]
) -> None:
    config, _ = transcoding_layer(options(tmp_path, *args), tmp_path)
    found = config.registry.for_format(KeyFormat.OPENPGP)
    assert tuple(t.name for t in found) == names


def test_unknown_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="native or gpg"):
        options(tmp_path, "--openpgp-encoder", "pgpy")
