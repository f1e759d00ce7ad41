"""Training the unmixing-guided Mamba on scenes and their labels (the method of docs/method.md).

A run's cost follows its labels, not its scenes. It trains on *chips*: the scene's own
prediction tiles whose core holds a training pixel (:mod:`hsimap.sampling`), read from the
scene when needed through a cache of bounded size. Each step takes a mini-batch of chips
through the batched network; the schedule counts steps, not passes over the scene. Validation
scores a fixed, bounded sample of validation pixels, and the final test pass a bounded,
class-stratified sample of test pixels (``test_all`` for every one), both through
:func:`hsimap.inference.batch_products`, the function prediction uses.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError, Interrupted
from hsimap.io.gdal import SCATTERED_CACHE_BYTES, bounded_write_cache
from hsimap.model.baselines import KINDS
from hsimap.model.naming import endmember_names
from hsimap.model.network import UnmixingGuidedMamba
from hsimap.model.store import (
    CARD,
    TrainedModel,
    check_model_folder,
)
from hsimap.runtime import keep_freed_blocks, release_memory, seeded, thread_budget
from hsimap.sampling import label_chips, sample_tiles
from hsimap.workflows.chips import ChipReader, score_chips
from hsimap.workflows.fit import Fit, init_endmembers
from hsimap.workflows.train_baselines import auto_classifier, train_baseline
from hsimap.workflows.train_finish import finish
from hsimap.workflows.train_options import TrainOptions, TrainResult, pair_labels
from hsimap.workflows.train_setup import TrainScene, setup_run, split_names

__all__ = ["ChipReader", "TrainOptions", "TrainResult", "TrainScene", "pair_labels",
           "score_chips", "split_names", "train", "train_from_files"]


def train(scene: xr.DataArray | Sequence[xr.DataArray],
          labels: np.ndarray | Sequence[np.ndarray], class_table: ClassTable,
          out_dir: str | Path, opts: TrainOptions | None = None, *,
          overwrite: bool = False,
          split: np.ndarray | Sequence[np.ndarray] | None = None) -> TrainResult:
    """Train a model and write its folder (weights, card, history, split rasters) to ``out_dir``.

    ``scene`` and ``labels`` may be lists, one label array per scene on its grid (several
    flight lines, one model): one split and one scaling over all scenes; the split is written
    per scene (``split_<stem>.tif``) and the card lists the scenes.

    Everything that can be checked is checked before the first step: the options, the
    labels, and that ``out_dir`` can be written and holds no model (unless ``overwrite``).
    torch's global random state and thread count are as they were when it returns.

    ``split``: a fixed split (:class:`~hsimap.classes.Split` codes per pixel, one array per
    scene) instead of one drawn by ``opts`` (an active-learning round, an agreed protocol).
    """
    opts = opts or TrainOptions()
    opts.check()
    check_model_folder(out_dir, overwrite)
    many = not isinstance(scene, xr.DataArray)
    scenes_in = list(scene) if many else [scene]
    labels_in = list(labels) if many else [labels]
    if len(scenes_in) != len(labels_in) or not scenes_in:
        raise HsimapError(f"{len(scenes_in)} scene(s) but {len(labels_in)} label array(s); "
                          "give one per scene")
    scenes = [TrainScene(s, np.asarray(lab)) for s, lab in zip(scenes_in, labels_in,
                                                               strict=True)]
    for sc in scenes:   # read_window leaves masked pixels out; say how many labels that costs
        if "quality_mask" in sc.data.coords:
            hidden = int(((sc.labels > 0) & np.asarray(sc.data.coords["quality_mask"])).sum())
            if hidden:
                warnings.warn(f"{hidden:,} labelled pixels of {Path(sc.data.attrs['source']).name}"
                              f" lie under its {sc.data.attrs['quality_layers']} mask; left out",
                              stacklevel=2)
    if split is not None:
        splits_in = list(split) if many else [split]
        for sc, sp in zip(scenes, splits_in, strict=True):
            if np.shape(sp) != sc.labels.shape:
                raise HsimapError(f"the split is {np.shape(sp)}, the labels {sc.labels.shape}")
            sc.split = np.asarray(sp)
    # GDAL's default block cache (5% of RAM) would keep what the scans of the scenes read:
    # memory would grow with the scene, not with the batch and the chip cache.
    keep_freed_blocks()
    with thread_budget(opts.threads) as threads, seeded(opts.seed), bounded_write_cache():
        return _train(scenes, class_table, out_dir, opts, overwrite, threads)


def _train(scenes: list[TrainScene], class_table: ClassTable, out_dir: str | Path,
           opts: TrainOptions, overwrite: bool, threads: int) -> TrainResult:
    t_start = time.perf_counter()
    setup = setup_run(scenes, class_table, opts)
    grids = [sc.grid for sc in scenes]
    splits = [sc.split for sc in scenes]
    labels = [sc.labels for sc in scenes]
    chips = label_chips(splits, grids, Split.TRAIN)
    if not chips:
        raise HsimapError("no training pixels fall on valid scene pixels")
    val_chips = sample_tiles(label_chips(splits, grids, Split.VALIDATION), labels,
                             max_tiles=opts.val_windows, max_pixels=None, seed=opts.seed)
    if opts.classifier in KINDS:
        return train_baseline(setup, chips, val_chips, out_dir, opts, overwrite, threads,
                               t_start)
    net = UnmixingGuidedMamba(setup.cfg)
    model = TrainedModel(net, setup.card)
    lo, hi = model.scale
    init_endmembers(net, (setup.sample - np.float32(lo)) / np.float32(max(hi - lo, 1e-12)),
                     opts.seed)
    net.to(torch.device(opts.device))
    model.use_precision(opts.precision)
    reader = ChipReader(model, scenes, chips, opts.cache_mb * 2 ** 20)
    # A quarter more for the validation sample, which is scored every val_every steps.
    val_reader = ChipReader(model, scenes, val_chips, opts.cache_mb * 2 ** 20 // 4)
    fit = Fit(model, setup, reader, val_reader, opts)
    # Steps read chips scattered over the scenes: GDAL's cache need hold one chip's tiles only,
    # and what the scans left in it goes back to the system.
    with bounded_write_cache(SCATTERED_CACHE_BYTES):
        release_memory()
        stopped = fit.run()
    if fit.best_state is None:
        raise HsimapError("training stopped before the first step finished; nothing saved")
    if stopped and (Path(out_dir) / CARD).exists():
        # A complete model is worth more than one of a few steps: --overwrite was asked of a
        # run that finishes, and Ctrl-C takes that back.
        raise Interrupted(f"interrupted at step {len(fit.history)} of {opts.steps}: the "
                          f"previous model in {out_dir} was kept, nothing of this run saved")
    net.load_state_dict(fit.best_state)
    net.eval()
    reader.clear()
    val_reader.clear()
    fit.ema = None
    release_memory()  # the test pass's worker threads allocate elsewhere than the caches did
    card = setup.card
    val_metrics, oas = fit.best_val, {"mamba": fit.best_val.overall_accuracy}
    arrays = None
    if opts.classifier == "auto":
        val_metrics, arrays, oas = auto_classifier(model, scenes, chips, val_chips,
                                                   val_metrics, opts, threads)
    per_step = float(np.mean([h["seconds"] for h in fit.history]))
    card.endmember_names = endmember_names(*model.endmember_spectra(), opts.name_library)
    test, n_test, seconds = finish(
        model, scenes, opts, threads, out_dir, overwrite, t_start=t_start,
        val_metrics=val_metrics, arrays=arrays, history=fit.history,
        record={"steps_run": len(fit.history), "best_step": fit.best_step,
                "stopped_early": stopped, "seconds_per_step": round(per_step, 4),
                "patience_stop": fit.stopped_early,
                "chips": len(chips), "chip_reads": reader.reads,
                "validation_pixels": int(sum(c.pixels for c in val_chips)),
                "validation_reads": val_reader.reads})
    return TrainResult(model, fit.best_step, val_metrics, test, seconds, per_step, stopped,
                       n_test, oas)


def train_from_files(scenes: Sequence[str | Path], labels: Sequence[str | Path],
                     out_dir: str | Path, opts: TrainOptions | None = None, *,
                     class_field: str | None = None, classes_csv: str | Path | None = None,
                     variable: str | None = None, label_variable: str | None = None,
                     mask: str | None = None,
                     overwrite: bool = False) -> TrainResult:
    """:func:`train` from files, as ``hsimap train`` takes them: one label file per scene,
    in order, or one vector file whose polygons each scene takes where they fall on it.
    Classes are combined by name over the scenes.

    The options and the model folder are checked before any scene is read."""
    from hsimap.io.labels import combine_labels, load_labels
    from hsimap.io.scene import open_scene

    opts = opts or TrainOptions()
    opts.check()
    check_model_folder(out_dir, overwrite)
    labels = pair_labels(scenes, labels)
    data = [open_scene(s, variable=variable, mask=mask) for s in scenes]
    loaded = []
    for lab, d, name in zip(labels, data, scenes, strict=True):
        try:
            loaded.append(load_labels(lab, d, class_field=class_field, variable=label_variable,
                                      classes_csv=classes_csv, partial=len(scenes) > 1))
        except HsimapError as exc:
            raise HsimapError(f"{exc} ({name})" if len(scenes) > 1 else str(exc)) from None
    if len(scenes) == 1:
        return train(data[0], loaded[0][0], loaded[0][1], out_dir, opts, overwrite=overwrite)
    table, lab = combine_labels([t for _, t in loaded], [a for a, _ in loaded])
    return train(data, lab, table, out_dir, opts, overwrite=overwrite)
