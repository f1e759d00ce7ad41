"""The embedded demo: synth -> train -> predict -> evaluate, no download, a few minutes."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.store import load_model
from hsimap.model.vca import match_endmembers
from hsimap.synth import SynthSpec, make_scene
from hsimap.workflows.predict import write_outputs
from hsimap.workflows.train import TrainOptions, train


@dataclass
class DemoSettings:
    width: int = 320
    height: int = 240
    bands: int = 40
    classes: int = 4
    endmembers: int = 5
    train_per_class: int = 15
    steps: int = 60
    hidden: int = 48
    window: int = 64
    halo: int = 8
    crop: int = 128              # the labelled training area, px a side
    region_size: float = 40.0
    seed: int = 0


def _write_crop(scene: Path, path: Path, size: int) -> Path:
    """The top-left size x size px of a scene as its own GeoTIFF (georeferencing kept)."""
    from rasterio.windows import Window

    from hsimap.io.files import atomic_output

    with rasterio.open(scene) as src:
        win = Window(0, 0, min(size, src.width), min(size, src.height))
        profile = dict(src.profile, width=win.width, height=win.height,
                       transform=src.window_transform(win), tiled=False)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with atomic_output(path, overwrite=True) as tmp, \
                rasterio.open(tmp, "w", **profile) as dst:
            dst.write(src.read(window=win))
            for b in range(1, src.count + 1):
                dst.update_tags(b, **src.tags(b))
    return path


@dataclass
class DemoReport:
    folder: Path
    files: dict[str, Path]
    metrics: Metrics
    abundance_rmse: float
    endmember_sad_deg: float
    purest: list[float]          # per true material, its largest abundance in any pixel
    seconds: dict[str, float]


def run_demo(folder: str | Path, settings: DemoSettings | None = None,
             progress: bool = True) -> DemoReport:
    """Run the whole job on a synthetic scene in ``folder`` (its files are replaced)."""
    s = settings or DemoSettings()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    secs = {}
    t = time.perf_counter()
    made = make_scene(out / "demo_scene.tif",
                      SynthSpec(width=s.width, height=s.height, bands=s.bands,
                                classes=s.classes, endmembers=s.endmembers,
                                region_size=s.region_size,
                                nodata_edges=True, seed=s.seed),
                      overwrite=True)
    secs["synth"] = time.perf_counter() - t
    scene = open_scene(made.scene)
    labels, table = load_labels(made.labels, scene)
    # A field campaign labels one part of a flight line: the model trains on that crop and is
    # then applied to the whole line.
    crop = _write_crop(made.scene, out / "demo_training_area.tif", s.crop)
    crop_scene = open_scene(crop)
    with warnings.catch_warnings():  # the truth labels are resampled to the crop: expected
        warnings.simplefilter("ignore", UserWarning)
        crop_labels, crop_table = load_labels(made.labels, crop_scene)
    t = time.perf_counter()
    train(crop_scene, crop_labels, crop_table, out / "model",
          TrainOptions(steps=s.steps, hidden=s.hidden, window=s.window, halo=s.halo,
                       endmembers=s.endmembers, train_per_class=s.train_per_class,
                       val_every=5, seed=s.seed, progress=progress),
          overwrite=True)  # the demo's folder is its own: a rerun replaces what it made
    secs["train"] = time.perf_counter() - t
    model = load_model(out / "model")
    t = time.perf_counter()
    report = write_outputs(scene, model, out / "maps", overwrite=True, progress=progress)
    secs["predict"] = time.perf_counter() - t
    with rasterio.open(report.paths["classes"]) as src:
        pred = src.read(1)
    # Scored on every labelled pixel outside the training area: none was seen in training.
    outside = np.ones(labels.shape, dtype=bool)
    outside[:s.crop, :s.crop] = False
    metrics = classification_metrics(np.where(outside, labels, 0), pred, table.ids)
    # Unmixing quality: learned endmembers matched to the true ones by spectral angle.
    spectra, _ = model.endmember_spectra()
    order, angles = match_endmembers(spectra, made.endmembers)
    with rasterio.open(report.paths["abundances"]) as src:
        est = src.read()
    with rasterio.open(made.abundances) as src:
        true = src.read()
    valid = np.isfinite(true[0])
    rmse = float(np.sqrt(np.mean((est[order][:, valid] - true[:, valid]) ** 2)))
    purest = [float(v) for v in true[:, valid].max(axis=1)]
    return DemoReport(out, {"scene": made.scene, "training area": crop, "truth labels": made.labels,
                            "truth abundances": made.abundances, "model": out / "model",
                            **report.paths},
                      metrics, rmse, float(angles.mean()), purest, secs)
