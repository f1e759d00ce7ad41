"""The layout installs: a wheel carries the top-level cli/ folder as hsimap.cli."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_wheel_installs_hsimap_cli(tmp_path):
    # Built from a copy: setuptools builds in the source tree, which must stay clean.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("hsimap", "cli"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist",
             src])
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("hsimap-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hsimap/cli/main.py" in names and "hsimap/workflows/train.py" in names
    assert not any(n.startswith("cli/") for n in names)  # no stray top-level package
    assert "hsimap/data/usgs_spectra.csv" in names
    r = run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
             tmp_path / "site", wheel])
    assert r.returncode == 0, r.stderr[-2000:]
    # From the installed copy (first on the path), not from this checkout.
    code = "import hsimap.cli.main as m; print(m.__file__)"
    r = run([sys.executable, "-c", code], cwd=tmp_path,
            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith(str(tmp_path / "site"))


def test_editable_checkout_serves_cli_from_the_cli_folder():
    import hsimap.cli.main

    assert Path(hsimap.cli.main.__file__).resolve() == ROOT / "cli" / "main.py"
