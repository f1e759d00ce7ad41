"""The SVM and random forest beside (``--classifier auto``) or instead of (``svm``, ``rf``)
the network, on the run's bands, scaling and split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.baselines import KINDS, PixelClassifier
from hsimap.model.store import (
    TrainedModel,
)
from hsimap.sampling import Chip
from hsimap.workflows.classifiers import chip_pixels, choose, fit_baselines
from hsimap.workflows.train_finish import finish
from hsimap.workflows.train_options import TrainOptions, TrainResult
from hsimap.workflows.train_setup import Setup, TrainScene


def _validation_metrics(model: TrainedModel, clf: PixelClassifier, val) -> Metrics:
    ids = np.asarray(model.class_table.ids)
    return classification_metrics(ids[val.y], ids[clf.predict(val.x)[0]],
                                  list(model.class_table.ids))


def auto_classifier(model: TrainedModel, scenes: list[TrainScene], chips: list[Chip],
          val_chips: list[Chip], network_val: Metrics, opts: TrainOptions, threads: int
          ) -> tuple[Metrics, dict[str, np.ndarray] | None, dict[str, float]]:
    """Fit the SVM and the forest beside the trained network; keep the classifier with the
    highest validation OA on the same validation pixels (the network's validation metrics,
    the winner's arrays, every OA). The network stays, for the abundances, whichever
    classifies."""
    train_px, val_px = chip_pixels(model, scenes, chips), chip_pixels(model, scenes, val_chips)
    fitted = fit_baselines(KINDS, train_px, val_px, seed=opts.seed, threads=threads)
    oas = {"mamba": network_val.overall_accuracy,
           **{k: f.validation_oa for k, f in fitted.items()}}
    winner = choose(oas, len(val_px.y))
    card = model.card
    card.classifier = {
        "kind": winner, "unmixing": True,
        "chosen_by": f"highest validation OA over {len(val_px.y)} validation pixels (ties: "
                     "mamba, then svm), a baseline replacing the Mamba only when higher by "
                     "more than one binomial standard error of the Mamba's; the network gives "
                     "the abundances whichever classifies",
        "validation_oa": {k: round(v, 6) for k, v in oas.items()},
        "params": {k: f.params for k, f in fitted.items()}}
    if winner == "mamba":
        return network_val, None, oas
    f = fitted[winner]
    model.classifier = PixelClassifier(winner, f.arrays, len(model.class_table.ids))
    return _validation_metrics(model, model.classifier, val_px), f.arrays, oas


def train_baseline(setup: Setup, chips: list[Chip], val_chips: list[Chip],
                    out_dir: str | Path, opts: TrainOptions, overwrite: bool, threads: int,
                    t_start: float) -> TrainResult:
    """``--classifier svm|rf``: the baseline alone, on the run's bands, scaling and split; no
    network, so no abundances or endmembers."""
    kind, scenes = opts.classifier, setup.scenes
    card = setup.card
    card.config = replace(setup.cfg, endmembers=0)
    card.endmember_names = []
    card.classifier = {"kind": kind, "unmixing": False}
    model = TrainedModel(None, card)
    train_px, val_px = chip_pixels(model, scenes, chips), chip_pixels(model, scenes, val_chips)
    f = fit_baselines((kind,), train_px, val_px, seed=opts.seed, threads=threads)[kind]
    model.classifier = PixelClassifier(kind, f.arrays, len(card.classes.ids))
    card.classifier.update(params=f.params,
                           validation_oa={kind: round(f.validation_oa, 6)})
    val_metrics = _validation_metrics(model, model.classifier, val_px)
    test, n_test, seconds = finish(
        model, scenes, opts, threads, out_dir, overwrite, t_start=t_start,
        val_metrics=val_metrics, arrays=f.arrays,
        record={"train_pixels": int(len(train_px.y)), "validation_pixels": int(len(val_px.y))})
    return TrainResult(model, 0, val_metrics, test, seconds, 0.0, False, n_test,
                       {kind: f.validation_oa})
