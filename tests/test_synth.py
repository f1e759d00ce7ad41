"""Synthetic scenes: truth is consistent, scenes are deterministic and block-independent."""

from __future__ import annotations

import numpy as np
import rasterio

from hsimap.io.scene import open_scene
from hsimap.synth import SynthSpec, _Model, make_scene


def test_abundances_sum_to_one_and_labels_follow_mixtures(small_scene):
    with rasterio.open(small_scene.abundances) as src:
        a = src.read()
        assert src.descriptions == tuple(small_scene.endmember_names)
    with rasterio.open(small_scene.labels) as src:
        labels = src.read(1)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-5)
    assert a.min() >= 0
    assert set(np.unique(labels)) == {1, 2, 3, 4}
    # Each region's mean abundance is closest to its own class mixture.
    for c in range(1, 5):
        mean = a[:, labels == c].mean(axis=1)
        dist = np.linalg.norm(small_scene.mixtures - mean, axis=1)
        assert np.argmin(dist) == c - 1


def test_scene_is_mixture_of_true_endmembers(small_scene):
    x = open_scene(small_scene.scene).values.reshape(32, -1)
    with rasterio.open(small_scene.abundances) as src:
        a = src.read().reshape(4, -1)
    recon = small_scene.endmembers.T @ a
    rel = np.linalg.norm(x - recon) / np.linalg.norm(x)
    assert rel < 0.15  # variability and noise, nothing else


def test_blocks_do_not_change_values():
    spec_a = SynthSpec(width=90, height=70, bands=10, seed=5, block=256)
    spec_b = SynthSpec(width=90, height=70, bands=10, seed=5, block=256)
    m = _Model(spec_a)
    whole = m.block(spec_a, 0, 70, 0, 90)
    part = _Model(spec_b).block(spec_b, 20, 50, 30, 90)
    np.testing.assert_allclose(whole[1][:, 20:50, 30:90], part[1], atol=1e-12)
    np.testing.assert_array_equal(whole[2][20:50, 30:90], part[2])


def test_deterministic(tmp_path):
    spec = SynthSpec(width=40, height=30, bands=6, seed=9)
    a = make_scene(tmp_path / "a.tif", spec)
    b = make_scene(tmp_path / "b.tif", spec)
    np.testing.assert_array_equal(open_scene(a.scene).values, open_scene(b.scene).values)
