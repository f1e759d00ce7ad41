"""The newcomer's path: the demo runs, the CLI reference is current, examples run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import hsimap, run

ROOT = Path(__file__).resolve().parents[1]


def test_demo_quick_runs_twice(tmp_path):
    for _ in range(2):  # running it twice is safe
        r = hsimap("demo", "--quick", "--quiet", "-o", tmp_path)
        assert r.returncode == 0, r.stderr
    assert "OA" in r.stdout and "kappa" in r.stdout and "RMSE" in r.stdout
    for name in ("demo_scene_classes.tif", "demo_scene_abundances.tif",
                 "demo_scene_confidence.tif", "demo_scene_error.tif",
                 "demo_scene_endmembers.sli", "demo_scene_classes.png"):
        assert (tmp_path / "maps" / name).exists()
    oa = float(r.stdout.split(" OA ")[1].split()[0])
    assert oa > 0.6  # measured 0.776 (4 classes, chance 0.25)
    # An unmixing that misses the demo's materials says why, with the scene's purity.
    sad = float(r.stdout.split("mean SAD ")[1].split()[0])
    why = "the learned endmembers are not the demo's materials: no pixel of this scene is purer"
    assert (why in r.stdout) == (sad > 5), r.stdout


def test_cli_reference_is_current():
    env = dict(os.environ, COLUMNS="100")
    r = run([sys.executable, "-m", "hsimap.cli.reference"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "docs" / "cli.md").read_text(), \
        "docs/cli.md is stale: COLUMNS=100 python -m hsimap.cli.reference > docs/cli.md"


def _run_example(name, *args):
    r = run([sys.executable, ROOT / "examples" / name, *args])
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_example_salinas(tmp_path):
    from tests.conftest import shared

    shared("salinasA")
    out = _run_example("salinas_mat.py", "-o", tmp_path, "--steps", 3)
    assert "from the written map" in out
    import rasterio

    with rasterio.open(tmp_path / "maps" / "salinasA_classes.tif") as src:
        assert src.crs.to_epsg() == 32610


def test_example_enmap_polygons(tmp_path):
    out = _run_example("enmap_geotiff_polygons.py", "-o", tmp_path, "--size", 96,
                       "--steps", 3)
    assert "['fallow', 'maize', 'orchard', 'wheat']" in out
    assert (tmp_path / "maps" / "product_classes.tif").exists()


def test_example_python_api(tmp_path):
    _run_example("python_api.py", "-o", tmp_path, "--steps", 2)
    assert (tmp_path / "window.png").exists() and (tmp_path / "endmembers.png").exists()


@pytest.mark.slow
def test_example_batch(tmp_path):
    out = _run_example("batch_cluster.py", "-o", tmp_path, "--lines", 2, "--size", 48,
                       "--steps", 2, "--workers", 1)
    assert "2 done, 0 failed" in out and "rerun: 2 skipped" in out
