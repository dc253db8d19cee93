"""examples/rot13_transcoder is a real plugin: pip installs it and the registry finds it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rot13_transcoder"
_BUILD_LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
#: Offline: no index, and the build backend is this environment's setuptools and wheel
#: (test extras) rather than a copy fetched into an isolated build environment.
OFFLINE_PIP_INSTALL = ["-m", "pip", "install", "--no-deps", "--no-input", "--no-index"]
OFFLINE_PIP_INSTALL += ["--no-build-isolation"]


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``site`` (the pip target) first on its path."""
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example pip-installed (from a copy) into a throwaway target: (site, source copy)."""
    work = tmp_path_factory.mktemp("rot13")
    source, site = work / "source", work / "site"
    shutil.copytree(EXAMPLE, source, ignore=_BUILD_LEFTOVERS)
    pip = run([*OFFLINE_PIP_INSTALL, "--target", str(site), str(source)], site, work)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (site / "rot13_transcoder" / "__init__.py").exists()
    return site, source


def test_installed_example_is_found_by_its_entry_point(installed: tuple[Path, Path]) -> None:
    """After pip install, the registry loads rot13-demo next to the built-ins, no failures."""
    site, source = installed
    code = (
        "from transcoder.transcoders import SmimeTranscoder, TranscoderRegistry\n"
        "registry, failures = TranscoderRegistry.from_entry_points([SmimeTranscoder()])\n"
        "print(registry.names(), failures, type(registry.get('rot13-demo')).__module__)\n"
    )
    result = run(["-c", code], site, source.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('smime', 'rot13-demo') () rot13_transcoder"


def test_example_tests_pass_against_the_installed_package(installed: tuple[Path, Path]) -> None:
    """The example's own tests (conformance mixin included) pass, none skipped."""
    site, source = installed
    result = run(
        ["-m", "pytest", str(source / "tests"), "-q", "-p", "no:cacheprovider", "-rs"],
        site,
        source.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "13 passed" in result.stdout and "skipped" not in result.stdout
