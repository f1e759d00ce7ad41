"""Training whose cost follows the labels: chips, bounded samples, bounded memory, determinism,
and a run that leaves the caller's torch state alone."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import rasterio
import torch

from hsimap.io.labels import load_labels, split_labels
from hsimap.io.scene import open_scene
from hsimap.sampling import label_chips, sample_tiles
from hsimap.synth import SynthSpec, make_scene
from hsimap.windows import tiles
from hsimap.workflows.train import TrainOptions, train
from tests.conftest import hsimap, run


def _spread_split(shape, classes=4, per_class=30, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, classes + 1, size=shape).astype(np.int32)
    return labels, split_labels(labels, list(range(1, classes + 1)), train_per_class=per_class,
                                seed=seed)


def test_chips_are_the_tiles_whose_core_holds_training_pixels():
    labels, split = _spread_split((1000, 1200))
    grid = tiles(1000, 1200, 64, 8)
    chips = label_chips([split], [grid], 1)
    # Spread labels: at most one chip per training pixel, and every training pixel in one.
    assert len(chips) <= 120
    assert sum(c.pixels for c in chips) == int((split == 1).sum()) == 120
    for c in chips:
        core = split[c.tile.core_rows, c.tile.core_cols]
        assert np.array_equal(c.mask, core == 1)


def test_test_sample_is_bounded_and_keeps_every_class():
    labels, split = _spread_split((1000, 1200))
    labels[:40, :40] = 5                      # a rare class in one corner
    split[:40, :40] = 3
    grid = tiles(1000, 1200, 64, 8)
    chips = label_chips([split], [grid], 3)
    assert len(chips) == len(grid)            # the test pixels cover the scene
    sample = sample_tiles(chips, [labels], max_tiles=50, max_pixels=20_000, seed=0)
    assert len(sample) <= 50
    assert sum(c.pixels for c in sample) <= 20_000
    seen = np.concatenate([labels[c.tile.core_rows, c.tile.core_cols][c.mask] for c in sample])
    assert set(np.unique(seen)) == {1, 2, 3, 4, 5}
    again = sample_tiles(chips, [labels], max_tiles=50, max_pixels=20_000, seed=0)
    assert [c.tile for c in again] == [c.tile for c in sample]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again, sample, strict=True))


def _small_run(made, folder, **kw):
    scene = open_scene(made.scene)
    labels, table = load_labels(made.labels, scene)
    settings = dict(steps=6, batch=4, hidden=16, window=32, halo=4, val_every=3,
                    progress=False, threads=1, seed=3)
    opts = TrainOptions(**{**settings, **kw})
    return train(scene, labels, table, folder, opts)


def test_same_seed_same_model_and_caller_state_restored(small_scene, tmp_path):
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    a = _small_run(small_scene, tmp_path / "a")
    assert torch.equal(torch.rand(3), expected_next)   # the caller's random stream goes on
    assert torch.get_num_threads() == threads
    b = _small_run(small_scene, tmp_path / "b")
    assert a.model.card.model_hash == b.model.card.model_hash
    assert a.test_metrics.overall_accuracy == b.test_metrics.overall_accuracy
    c = _small_run(small_scene, tmp_path / "c", batch=2)
    assert c.model.card.model_hash != a.model.card.model_hash


def test_card_records_chips_and_the_test_sample(small_scene, tmp_path):
    r = _small_run(small_scene, tmp_path / "m", test_pixels=500)
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    tr = card["training"]
    assert tr["steps_run"] == 6 and tr["chips"] >= 1
    assert 0 < tr["test_pixels"] <= 500 and r.test_metrics.pixels == tr["test_pixels"]
    full = _small_run(small_scene, tmp_path / "all", test_all=True)
    split_test = int(card["protocol"]["pixels"]["test"])
    assert full.test_pixels == split_test > 500


def test_epochs_is_read_as_steps(small_scene, tmp_path):
    r = hsimap("train", small_scene.scene, "-l", small_scene.labels, "-o", tmp_path / "m",
               "--epochs", 2, "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 1,
               "--threads", 1)
    assert r.returncode == 0, r.stderr
    assert "Warning: --epochs is the old name of --steps (read as --steps 2" in r.stderr
    assert "goes in hsimap 0.4" in r.stderr
    assert json.loads((tmp_path / "m" / "model.json").read_text())["training"]["steps_run"] == 2


MEMORY_SCRIPT = r"""
import resource, sys
from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.workflows.train import TrainOptions, train
scene = open_scene(sys.argv[1])
labels, table = load_labels(sys.argv[2], scene)
train(scene, labels, table, sys.argv[3],
      TrainOptions(steps=4, val_every=2, hidden=32, threads=2, progress=False,
                   cache_mb=int(sys.argv[4])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_memory_follows_the_batch_and_cache_not_the_scene(tmp_path):
    """A 2048 x 2048 x 64 scene with labels spread over all of it (the default protocol touches
    ~120 chips, 124 MiB of windows) trains with a 16 MiB chip cache in no more memory than a
    256 x 256 crop of the same kind needs, plus a margin for the labels (16 MiB a full map)."""
    peaks = {}
    for side in (256, 2048):
        made = make_scene(tmp_path / f"s{side}.tif",
                          SynthSpec(width=side, height=side, bands=64, classes=4,
                                    region_size=200, dtype="int16", seed=4))
        r = run([sys.executable, "-c", MEMORY_SCRIPT, made.scene, made.labels,
                 tmp_path / f"m{side}", 16])
        assert r.returncode == 0, r.stderr
        peaks[side] = int(r.stdout.split()[-1])
    assert peaks[2048] < peaks[256] + 150, peaks


def test_a_cache_smaller_than_the_chips_rereads_them_as_float16(small_scene, tmp_path):
    """16 chips of 32 bands x 32 x 32 px (2 MiB as float32) through a 1 MiB cache: the
    chips are read again as the cache turns over, kept as float16, and training still runs."""
    r = _small_run(small_scene, tmp_path / "m", cache_mb=1, steps=8)
    tr = r.model.card.training
    assert tr["chips"] * 32 * 32 * 32 * 4 > 2 ** 20
    assert tr["chip_reads"] > tr["chips"]
    assert r.test_metrics.pixels > 0


@pytest.mark.parametrize("case", ["border", "dead and constant bands", "partial pixels"])
def test_one_read_scan_equals_the_two_passes(tmp_path, case):
    """TrainingScan (one read) gives the dead bands and the scaling of dead_bands followed by
    scan_scene (two reads), also where a core must be judged again."""
    from hsimap.io.scene import open_scene, usable_bands
    from hsimap.windows import TrainingScan, dead_bands, scan_scene, tiles

    made = make_scene(tmp_path / "s.tif", SynthSpec(width=70, height=50, bands=12,
                                                    endmembers=4, classes=3, seed=2,
                                                    nodata_edges=True))
    with rasterio.open(made.scene) as src:
        profile, data = src.profile, src.read()
    nodata = profile["nodata"]
    if case != "border":
        data[3] = nodata                 # a band filled with nodata everywhere
        data[7] = 1234                   # a band of one value
    if case == "partial pixels":
        data[7, 10:14, 20:30] = nodata   # ... but nodata in a few pixels of the constant band
        data[1, 30:33, 5:9] = nodata     # and a live band missing at a few pixels
    path = tmp_path / "edited.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    scene = open_scene(path)
    grid = tiles(50, 70, 32, 4)
    bands = usable_bands(scene)
    one = TrainingScan(scene, grid, bands, n=500, seed=0)
    dead = dead_bands(scene, grid, bands)
    assert np.array_equal(one.dead, dead)
    scan = one.finish(~dead)
    ref = scan_scene(scene, grid, bands[~dead], n=500, seed=0)
    assert (scan.lo, scan.hi) == (ref.lo, ref.hi)
    assert scan.raw.shape[1] == ref.raw.shape[1] and 0 < len(scan.raw) <= 500
    if case != "border":
        assert dead[3] and dead[7]
