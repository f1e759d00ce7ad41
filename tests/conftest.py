"""Shared fixtures: real data paths and small synthetic scenes written through GDAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsimap.synth import SynthSpec, make_scene

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data)")
    return p


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A 96 x 80 px, 32-band GeoTIFF scene with 4 classes and 4 endmembers."""
    d = tmp_path_factory.mktemp("small")
    return make_scene(d / "scene.tif", SynthSpec(width=96, height=80, bands=32, endmembers=4,
                                                 classes=4, region_size=32, seed=3))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small model trained on a 160 x 140 px synthetic scene with a nodata border."""
    from hsimap.io.scene import open_scene
    from hsimap.labels import load_labels
    from hsimap.model.store import load_model
    from hsimap.train import TrainOptions, train

    d = tmp_path_factory.mktemp("trained")
    made = make_scene(d / "scene.tif", SynthSpec(width=160, height=140, bands=24, endmembers=4,
                                                 classes=4, region_size=48, nodata_edges=True,
                                                 seed=11))
    scene = open_scene(made.scene)
    labels, table = load_labels(made.labels, scene)
    result = train(scene, labels, table, d / "model",
                   TrainOptions(epochs=12, hidden=32, window=64, halo=8, val_every=4,
                                progress=False, threads=2, seed=0))
    return {"made": made, "model_dir": d / "model", "result": result,
            "model": load_model(d / "model")}
