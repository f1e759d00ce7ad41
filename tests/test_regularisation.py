"""The regularisation candidates measured for few labels (off by default: the method as
published): each changes training when on, and out-of-range values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsimap.errors import HsimapError
from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.workflows.train import TrainOptions, train
from tests.conftest import Trained

FAST = dict(steps=3, hidden=16, window=64, halo=8, val_every=3, progress=False, threads=2,
            seed=0)


def _losses(trained: Trained, d: Path, **extra) -> list[float]:
    scene = open_scene(trained.made.scene)
    labels, table = load_labels(trained.made.labels, scene)
    train(scene, labels, table, d, TrainOptions(**FAST, **extra))
    return [round(h["ce"], 6) for h in _history(d)]


def _history(d: Path) -> list[dict]:
    import csv

    with open(d / "history.csv") as f:
        return [{k: float(v) if k == "ce" else v for k, v in row.items()}
                for row in csv.DictReader(f)]


@pytest.mark.slow  # eight short trainings (about 40 s)
def test_each_candidate_changes_training_and_off_is_the_default(trained: Trained, tmp_path):
    base = _losses(trained, tmp_path / "base")
    assert _losses(trained, tmp_path / "again") == base          # deterministic
    for name, value in (("augment", 0.1), ("label_smoothing", 0.1), ("weight_decay", 0.01)):
        got = _losses(trained, tmp_path / name, **{name: value})
        assert got != base, name


@pytest.mark.parametrize("name", ["augment", "label_smoothing", "weight_decay"])
def test_out_of_range_values_are_refused(name):
    with pytest.raises(HsimapError, match=f"--{name.replace('_', '-')} must be in"):
        TrainOptions(**{name: 1.5}).check()
    with pytest.raises(HsimapError):
        TrainOptions(**{name: -0.1}).check()
