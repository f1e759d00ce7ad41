"""The tail every training run shares, written once: the test pass, the card's training
record and metrics, the hash of what is saved, and the model folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hsimap.classes import Split
from hsimap.io.rasters import Grid
from hsimap.metrics import Metrics
from hsimap.model.store import (
    TrainedModel,
    model_hash,
    save_model,
)
from hsimap.sampling import label_chips, sample_tiles
from hsimap.workflows.chips import score_chips
from hsimap.workflows.train_options import TrainOptions
from hsimap.workflows.train_setup import TrainScene, split_names


def _test_pixels(scenes: list[TrainScene]) -> int:
    """Every labelled test pixel, of which the test pass scores all or a sample."""
    return int(sum((sc.split == Split.TEST).sum() for sc in scenes))


def _split_rasters(scenes: list[TrainScene]) -> dict[str, tuple[np.ndarray, Grid]]:
    return {name: (sc.split, Grid.from_scene(sc.data))
            for name, sc in zip(split_names(scenes), scenes, strict=True)}


def _test(model: TrainedModel, scenes: list[TrainScene], opts: TrainOptions, threads: int
          ) -> tuple[Metrics | None, int]:
    """The final test pass: a bounded, class-stratified sample of test pixels (all of them
    with ``test_all``), predicted as prediction does."""
    labels = [sc.labels for sc in scenes]
    test_chips = label_chips([sc.split for sc in scenes], [sc.grid for sc in scenes],
                             Split.TEST)
    if not test_chips:
        return None, 0
    if not opts.test_all:
        test_chips = sample_tiles(test_chips, labels, max_tiles=opts.test_windows,
                                  max_pixels=opts.test_pixels, seed=opts.seed + 1)
    return score_chips(model, scenes, test_chips, batch=opts.batch,
                       workers=threads if opts.device == "cpu" else 1,
                       progress=opts.progress, desc="test")


def finish(model: TrainedModel, scenes: list[TrainScene], opts: TrainOptions, threads: int,
           out_dir: str | Path, overwrite: bool, *, t_start: float, val_metrics: Metrics,
           record: dict, arrays: dict[str, np.ndarray] | None = None,
           history: list[dict] | None = None) -> tuple[Metrics | None, int, float]:
    """Test, record and save a trained model, whichever classifier it is: the test pass, the
    card's training record (``record`` plus what every run records), metrics and hash, then
    the model folder. Returns the test metrics, the test pixels scored and the seconds the
    run took."""
    test, n_test = _test(model, scenes, opts, threads)
    seconds = time.perf_counter() - t_start
    card = model.card
    card.model_hash = model_hash(model.network, arrays)
    card.training = {**record, "seconds": round(seconds, 2), "test_pixels": n_test,
                     "test_pixels_labelled": _test_pixels(scenes),
                     "test_sample": None if opts.test_all else
                     {"max_windows": opts.test_windows, "max_pixels": opts.test_pixels}}
    card.validation_metrics = val_metrics.to_dict()
    card.test_metrics = test.to_dict() if test is not None else None
    if model.network is not None:
        model.network.to("cpu")
    save_model(out_dir, model.network, card, history=history, splits=_split_rasters(scenes),
               overwrite=overwrite, classifier=arrays)
    return test, n_test, seconds
