"""Outputs are bit-identical to hsimap before the re-layering (commit b8def02).

The digests below are of pixel arrays and library spectra written by that commit for a fixed
model (tests/data/model_v0_1) and a regenerated synthetic scene. The re-layering moved every
line that writes them; this shows it changed no output. Delete this test (or re-record it) when
an output is changed on purpose. The unmixing network's abundances are not pinned: they now run
one torch thread per window like prediction, which moves them by float32 rounding (1.2e-7).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import rasterio

from hsimap.io.scene import open_scene
from hsimap.model.store import load_model
from hsimap.products import write_outputs
from hsimap.synth import SynthSpec, make_scene
from hsimap.workflows.unmix import unmix

DATA = Path(__file__).parent / "data"
BEFORE = {
    "pred/abundances.tif": "1b4c59320ff46b1d",
    "pred/classes.tif": "6b85e611c77068f0",
    "pred/confidence.tif": "50cb47926f368ab1",
    # Re-recorded on purpose (issue 13): the error map is now an angle in physical units.
    "pred/error.tif": "f283f91eb35b1de5",
    "pred/endmembers.sli": "df59b6b7732e7a8d",
    "um/endmembers.sli": "2153ba541b23aa28",
    "uv/abundances.tif": "e117a2f2581a6607",
    "uv/error.tif": "3e1bd55409964f58",
    "uv/endmembers.sli": "00be8abd8e1fd30f",
}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_outputs_match_the_code_before_the_relayering(tmp_path):
    made = make_scene(tmp_path / "scene.tif",
                      SynthSpec(width=96, height=80, bands=24, endmembers=4, classes=4,
                                region_size=32, seed=5))
    scene = open_scene(made.scene)
    write_outputs(scene, load_model(DATA / "model_v0_1"), tmp_path / "pred", progress=False,
                  workers=1, quicklooks=False)
    unmix(scene, tmp_path / "um", endmembers=4, epochs=3, window=64, halo=8, hidden=16,
          progress=False, seed=0)
    unmix(scene, tmp_path / "uv", endmembers=4, method="vca-fcls", window=64, halo=8,
          progress=False)
    now = {}
    for key in BEFORE:
        folder, name = key.split("/")
        path = tmp_path / folder / f"scene_{name}"
        if path.suffix == ".tif":
            with rasterio.open(path) as src:
                now[key] = _digest(src.read())
        else:
            now[key] = _digest(np.fromfile(path, np.float32))
    assert now == BEFORE
