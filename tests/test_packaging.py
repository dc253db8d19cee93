"""What `pip install .` puts on a hoster's machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "data")
#: Offline: no index, and this environment's setuptools and wheel (test extras) build it.
OFFLINE_PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index")
OFFLINE_PIP_WHEEL += ("--no-build-isolation",)


def test_wheel_carries_the_twistd_plugin_and_every_package(tmp_path: Path) -> None:
    """The wheel holds twisted/plugins/transcoder_plugin.py (no __init__.py) and all subpackages."""
    # Build from a clean copy: a stale build/ directory in a checkout could hide a packaging bug.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*IGNORED))
    subprocess.run(
        [*OFFLINE_PIP_WHEEL, "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("imap_transcoder-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/transcoder_plugin.py" in names
    assert not any(n.startswith("twisted/") and n.endswith("__init__.py") for n in names)
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "transcoder").rglob("*.py")}
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
