"""Real sensor layouts: an EnMAP L2A GeoTIFF as EnMAP-Box and the EnMAP processor write it."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.model.store import load_model
from hsimap.synth import SynthSpec, make_scene
from hsimap.workflows.predict import write_outputs
from hsimap.workflows.train import TrainOptions, train
from tests.conftest import hsimap

FLAGGED = [5, 6, 20]     # water-vapour bands: bbl = 0, nodata everywhere
UNFLAGGED_DEAD = [25]    # nodata everywhere, yet bbl = 1


def enmap_like(tmp_path):
    """int16 reflectance x 10,000, nodata -32768, per-band wavelength/fwhm/units/bbl tags."""
    made = make_scene(tmp_path / "synth.tif", SynthSpec(width=64, height=48, bands=30,
                                                        endmembers=4, classes=3,
                                                        region_size=20, seed=7))
    with rasterio.open(made.scene) as src:
        cube, profile, wl = src.read(), src.profile, [float(src.tags(b)["wavelength"])
                                                       for b in range(1, src.count + 1)]
    data = np.round(cube * 10000).astype(np.int16)
    data[FLAGGED + UNFLAGGED_DEAD] = -32768
    profile.update(dtype="int16", nodata=-32768)
    path = tmp_path / "ENMAP01-L2A_SPECTRAL_IMAGE.TIF"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for b in range(1, 31):
            dst.update_tags(b, wavelength=f"{wl[b - 1]:.3f}", fwhm="10.0",
                            wavelength_units="nanometers",
                            bbl="0" if b - 1 in FLAGGED else "1")
    return path, made


def test_enmap_bad_bands_are_read_and_dead_bands_excluded(tmp_path):
    path, made = enmap_like(tmp_path)
    scene = open_scene(path)
    assert list(np.flatnonzero(scene.coords["bad_band"].values)) == FLAGGED
    r = hsimap("info", path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bad_bands"] == [b + 1 for b in FLAGGED]

    labels, table = load_labels(made.labels, scene)
    result = train(scene, labels, table, tmp_path / "model",
                   TrainOptions(steps=15, hidden=16, window=64, halo=8, val_every=5,
                                progress=False, threads=2))
    card = result.model.card
    assert card.excluded_bands == UNFLAGGED_DEAD
    assert not set(card.bands_used) & set(FLAGGED + UNFLAGGED_DEAD)
    assert len(card.bands_used) == 30 - 4

    report = write_outputs(scene, load_model(tmp_path / "model"), tmp_path / "maps",
                           progress=False, quicklooks=False)
    with rasterio.open(report.paths["classes"]) as src:
        classes = src.read(1)
    assert (classes > 0).all()  # every pixel valid: bad and dead bands no longer count
    agree = (classes == labels)[labels > 0].mean()
    print(f"agreement {agree:.3f}, test OA {result.test_metrics.overall_accuracy:.3f}")
    assert agree > 0.6  # and mapped (3 classes: chance 0.33)
