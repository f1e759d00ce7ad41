"""The baselines of ``hsimap train --classifier svm|rf|auto``: their pixels and their choice.

A baseline reads what the network reads: the model's bands and scaling, the run's split. It
trains on every training pixel and is tuned on the validation pixels the network is
validated on, so that the validation OAs of all candidates are comparable and ``auto`` can
keep the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hsimap.errors import HsimapError
from hsimap.inference import scale_values
from hsimap.io.gdal import SCATTERED_CACHE_BYTES, bounded_write_cache
from hsimap.io.scene import read_window
from hsimap.model.baselines import Fitted, fit
from hsimap.model.store import TrainedModel
from hsimap.sampling import Chip

# On a tie the method hsimap is built on wins, then the SVM (it needs no seed to be repeated).
PREFERENCE = ("mamba", "svm", "rf")


@dataclass
class Pixels:
    """Scaled spectra (n, bands) of labelled pixels and their class indices (0..C-1)."""

    x: np.ndarray
    y: np.ndarray


def chip_pixels(model: TrainedModel, scenes, chips: list[Chip]) -> Pixels:
    """The valid masked pixels of ``chips`` (each a tile's core and a mask on it), read from
    their scenes and scaled as the network's input is."""
    ids = model.class_table.ids
    lut = np.full(max(ids) + 1, -1, np.int64)
    lut[ids] = np.arange(len(ids))
    xs, ys = [], []
    bands = model.band_indices
    with bounded_write_cache(SCATTERED_CACHE_BYTES):
        for chip in chips:
            sc, t = scenes[chip.scene], chip.tile
            values, valid = read_window(sc.data, t.core_rows, t.core_cols, valid_bands=bands)
            keep = chip.mask & valid
            labels = sc.labels[t.core_rows, t.core_cols][keep]
            xs.append(scale_values(model, values)[:, keep].T)
            inside = (labels >= 0) & (labels < len(lut))
            ys.append(np.where(inside, lut[np.where(inside, labels, 0)], -1))
    x = np.concatenate(xs) if xs else np.zeros((0, len(bands)), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    known = y >= 0
    return Pixels(np.ascontiguousarray(x[known], np.float32), y[known])


def fit_baselines(kinds: tuple[str, ...], train: Pixels, val: Pixels, *, seed: int,
                  threads: int) -> dict[str, Fitted]:
    """Fit each of ``kinds`` on the training pixels, tuned on the validation pixels."""
    if len(val.y) == 0:
        raise HsimapError("no validation pixels fall on valid scene pixels: a baseline "
                          "cannot be tuned")
    out = {}
    for kind in kinds:
        try:
            out[kind] = fit(kind, train.x, train.y, val.x, val.y, seed=seed, threads=threads)
        except ValueError as exc:
            raise HsimapError(f"--classifier {kind}: {exc}") from None
    return out


def choose(validation_oa: dict[str, float], pixels: int | None = None) -> str:
    """The classifier ``auto`` keeps: the candidate with the highest validation OA (ties:
    :data:`PREFERENCE` order), except that a baseline replaces the Mamba only when it beats
    it by more than one binomial standard error of the Mamba's OA over ``pixels``
    validation pixels (None: any margin).

    With the 30/10 protocol a validation set holds about ten pixels a class, and two
    classifiers a few pixels apart on it are not told apart: on EnMAP west the candidate of
    the higher validation OA had the lower test OA in most seeds (docs/benchmarks.md). The
    Mamba, which also unmixes, is then kept."""
    best = max(validation_oa, key=lambda k: (validation_oa[k], -PREFERENCE.index(k)))
    if best == "mamba" or "mamba" not in validation_oa or not pixels:
        return best
    p = validation_oa["mamba"]
    margin = math.sqrt(max(p * (1 - p), 0.0) / pixels)
    return best if validation_oa[best] - p > margin else "mamba"
