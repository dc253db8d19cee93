"""What `pip install .` puts on a hoster's machine; what `pip install -e .` gives a developer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "data")
#: Offline: no index, and this environment's setuptools and wheel (test extras) build it.
OFFLINE_PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index")
OFFLINE_PIP_WHEEL += ("--no-build-isolation",)


def fresh_venv(folder: Path) -> Path:
    """A new virtualenv at ``folder`` that sees this environment's packages (the
    dependencies, setuptools, wheel) through a .pth file: installs run offline."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    (Path(site) / "test-dependencies.pth").write_text(here + "\n")
    return python


def twistd_plugins(python: Path, cwd: Path) -> str:
    """``twistd --help`` of ``python``, run away from any checkout."""
    done = subprocess.run(
        [str(python), "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return done.stdout


def copy_source(target: Path) -> Path:
    """The project as a fresh clone has it (no .venv, build or egg-info)."""
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*IGNORED))
    return target


def test_editable_install_finds_the_twistd_plugin(tmp_path: Path) -> None:
    """`pip install -e .` as the Makefile runs it (no `editable_mode=compat`): twistd,
    started outside the checkout, lists the transcoder plugin, and transcoder is the
    checkout's."""
    makefile = (REPO / "Makefile").read_text()
    assert "editable_mode" not in makefile and "pip install -q -e '.[test]'" in makefile
    source = copy_source(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--no-build-isolation", "-e", str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "transcoder " in twistd_plugins(python, elsewhere)
    located = subprocess.run(
        [str(python), "-c", "import transcoder; print(transcoder.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        check=True,
    ).stdout
    assert located.startswith(str(source))


def test_wheel_carries_the_twistd_plugin_and_every_package(tmp_path: Path) -> None:
    """The wheel holds twisted/plugins/transcoder_plugin.py (no __init__.py) and all subpackages."""
    # Build from a clean copy: a stale build/ directory in a checkout could hide a packaging bug.
    source = copy_source(tmp_path / "src")
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
