"""Everything a training run fixes before its first step: the scenes with their labels and
split, the bands, the scaling, the network's size and the card (:func:`setup`)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import xarray as xr

from hsimap._version import __version__
from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError
from hsimap.io.files import output_stem
from hsimap.io.labels import split_labels
from hsimap.io.scene import usable_bands
from hsimap.model.baselines import KINDS
from hsimap.model.network import ModelConfig
from hsimap.model.store import (
    ModelCard,
    Scaling,
    split_file_names,
)
from hsimap.model.vca import VCA_SAMPLE
from hsimap.windows import Tile, TrainingScan, tiles
from hsimap.workflows.train_options import TrainOptions


@dataclass
class TrainScene:
    """One flight line of a training run: the scene, its labels on its grid, its tiles, and
    which of its labelled pixels train, validate and test (set by the run's one split)."""

    data: xr.DataArray
    labels: np.ndarray
    grid: list[Tile] = field(default_factory=list)
    split: np.ndarray | None = None

    @property
    def name(self) -> str:
        return output_stem(self.data.attrs.get("source", "scene"))


def split_names(scenes: list[TrainScene]) -> list[str]:
    """The split rasters' file names, one per scene (see :func:`split_file_names`)."""
    return split_file_names([str(sc.data.attrs.get("source", "scene")) for sc in scenes])


@dataclass
class Setup:
    """What a run fixes before the first epoch: bands, split, tiles, scaling, the card."""

    bands: np.ndarray
    scenes: list[TrainScene]
    card: ModelCard
    cfg: ModelConfig
    sample: np.ndarray   # (n, bands) valid pixels drawn over the scenes, physical units


def _same_bands(scenes: list[TrainScene]) -> None:
    """Several scenes train one model only if their bands are the same (count, wavelengths)."""
    first = scenes[0].data
    for sc in scenes[1:]:
        d = sc.data
        if d.sizes["band"] != first.sizes["band"]:
            raise HsimapError(f"{sc.name}: {d.sizes['band']} bands, {scenes[0].name} "
                              f"{first.sizes['band']}; scenes of one model need the same bands")
        a, b = first.coords["wavelength"].values, d.coords["wavelength"].values
        if not np.allclose(a, b, rtol=0, atol=0.5, equal_nan=True):
            raise HsimapError(f"{sc.name}: wavelengths differ from {scenes[0].name}'s; scenes "
                              "of one model need the same bands")


def setup_run(scenes: list[TrainScene], class_table: ClassTable, opts: TrainOptions) -> Setup:
    """Check the inputs and fix everything the run depends on, before any fitting: the bands
    every scene has data in, one split and one scaling over all scenes."""
    for sc in scenes:
        height, width = sc.data.sizes["y"], sc.data.sizes["x"]
        if sc.labels.shape != (height, width):
            raise HsimapError(f"labels are {sc.labels.shape[1]} x {sc.labels.shape[0]} px, the "
                              f"scene {sc.name} {width} x {height}")
        sc.grid = tiles(height, width, opts.window, opts.halo)
    _same_bands(scenes)
    scene = scenes[0].data
    bands = usable_bands(scene)
    for sc in scenes[1:]:
        bands = np.intersect1d(bands, usable_bands(sc.data))
    # One read of each scene: the bands with no information anywhere, then the scaling and
    # the VCA sample of the others.
    passes = [TrainingScan(sc.data, sc.grid, bands, n=VCA_SAMPLE // len(scenes), seed=opts.seed)
              for sc in scenes]
    dead = np.logical_or.reduce([ps.dead for ps in passes])
    excluded, kept, bands = bands[dead], ~dead, bands[~dead]
    n_classes = len(class_table.ids)
    p = opts.endmembers or max(4, n_classes + 2)
    if len(bands) < p and opts.classifier not in KINDS:
        raise HsimapError(f"the scene has {len(bands)} usable bands, fewer than the {p} "
                          "endmembers asked for; use --endmembers with a smaller number")
    if n_classes < 2:
        raise HsimapError("labels hold a single class; classification needs at least two")
    # One split over all scenes: the per-class counts hold for the campaign, not per line.
    flat = np.concatenate([sc.labels.ravel() for sc in scenes])
    given = all(sc.split is not None for sc in scenes)
    if given:   # the caller's own split
        split = np.concatenate([np.asarray(sc.split).ravel() for sc in scenes])
        if np.any((split != 0) & (flat <= 0)):
            raise HsimapError("the split marks pixels that have no label")
        if not (split == Split.TRAIN).any():
            raise HsimapError("the split has no training pixels")
    else:
        split = split_labels(flat, class_table.ids, train_per_class=opts.train_per_class,
                             val_per_class=opts.val_per_class,
                             train_fraction=opts.train_fraction, seed=opts.seed)
    if not (split == Split.VALIDATION).any():
        raise HsimapError("too few labelled pixels for a validation set (need at least 3 in a "
                          "class)")
    start = 0
    for sc in scenes:
        sc.split = split[start:start + sc.labels.size].reshape(sc.labels.shape)
        start += sc.labels.size
    scans = [ps.finish(kept) for ps in passes]
    lo, hi = min(x.lo for x in scans), max(x.hi for x in scans)
    wl = scene.coords["wavelength"].values
    cfg = ModelConfig(bands=len(bands), classes=n_classes, endmembers=p,
                      variants=opts.variants, hidden=opts.hidden, tokens=opts.tokens,
                      unmixing=opts.unmixing, coord_period=opts.window)
    card = ModelCard(
        config=cfg, classes=class_table, scene_bands=int(scene.sizes["band"]),
        bands_used=[int(b) for b in bands], excluded_bands=[int(b) for b in excluded],
        scaling=Scaling(lo, hi),
        window=opts.window, halo=opts.halo,
        endmember_names=[f"endmember {i + 1}" for i in range(p)],
        scene_wavelengths=[float(v) for v in wl] if np.all(np.isfinite(wl)) else None,
        scene=scene.attrs.get("source"), hsimap_version=__version__,
        scenes=[str(sc.data.attrs.get("source")) for sc in scenes] if len(scenes) > 1 else None,
        protocol={"train_per_class": opts.train_per_class,
                  "val_per_class": opts.val_per_class,
                  "train_fraction": opts.train_fraction, "seed": opts.seed,
                  "split": "given" if given else "drawn",
                  "pixels": {s.name.lower(): int((split == s).sum()) for s in Split}},
        options={k: v for k, v in asdict(opts).items() if k != "progress"},
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )
    return Setup(bands, scenes, card, cfg, np.concatenate([x.raw for x in scans]))
