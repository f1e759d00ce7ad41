"""The newcomer's path: the demo runs, the CLI reference is current, examples run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_quick_runs_twice(tmp_path):
    for _ in range(2):  # running it twice is safe
        r = subprocess.run([sys.executable, "-m", "hsimap", "demo", "--quick", "--quiet", "-o",
                            tmp_path], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert "OA" in r.stdout and "kappa" in r.stdout and "RMSE" in r.stdout
    for name in ("demo_scene_classes.tif", "demo_scene_abundances.tif",
                 "demo_scene_confidence.tif", "demo_scene_error.tif",
                 "demo_scene_endmembers.sli", "demo_scene_classes.png"):
        assert (tmp_path / "maps" / name).exists()
    oa = float(r.stdout.split(" OA ")[1].split()[0])
    assert oa > 0.6  # measured 0.776 (4 classes, chance 0.25)


def test_cli_reference_is_current():
    env = dict(os.environ, COLUMNS="100")
    r = subprocess.run([sys.executable, "-m", "hsimap.cli.reference"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "docs" / "cli.md").read_text(), \
        "docs/cli.md is stale: COLUMNS=100 python -m hsimap.cli.reference > docs/cli.md"
