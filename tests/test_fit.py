"""A training step's parts, run side by side: their batch-norm statistics merge as if the parts
had run one after another, and a trained model does not depend on how many cores ran it."""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load_file

from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.workflows import fit
from hsimap.workflows.fit import Twins
from hsimap.workflows.train import TrainOptions, train


def test_twins_share_the_parameters_and_merge_statistics_as_one_after_another():
    torch.manual_seed(0)
    net = UnmixingGuidedMamba(ModelConfig(bands=12, classes=3, endmembers=4, hidden=16,
                                          variants=3, min_tokens=5))
    for m in net.modules():   # statistics away from their start, so that order shows
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    serial = copy.deepcopy(net).train()
    xs = [torch.rand(2, 12, 16, 16) * (k + 1) for k in range(3)]
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    twins = Twins(net)
    copies = twins.take(3)
    own = {id(p) for p in net.parameters()}
    assert all({id(p) for p in c.parameters()} == own for c in copies)
    with torch.no_grad():
        for x, c in zip(xs, copies, strict=True):
            c(x, valid)
            serial(x, valid)
    twins.merge(copies)
    merged, expected = dict(net.named_buffers()), dict(serial.named_buffers())
    moved = 0
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-6)
        moved += int(name.endswith("running_mean"))
    assert moved == 6
    # Taken again, the copies start from the merged statistics.
    again = twins.take(2)
    for c in again:
        for a, b in zip(c.buffers(), net.buffers(), strict=True):
            assert torch.equal(a, b)


def test_a_trained_model_does_not_depend_on_the_cores(small_scene, tmp_path, monkeypatch):
    """One core runs a step's two parts one after another, two run them side by side: the
    same weights, bit for bit."""
    scene = open_scene(small_scene.scene)
    labels, table = load_labels(small_scene.labels, scene)
    pools = []

    class Counted(fit.ThreadPoolExecutor):
        def __init__(self, workers: int):
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(fit, "ThreadPoolExecutor", Counted)
    weights = []
    for threads in (1, 2):
        out = tmp_path / f"m{threads}"
        train(scene, labels, table, out,
              TrainOptions(steps=6, val_every=3, hidden=16, window=32, halo=4, seed=0,
                           threads=threads, progress=False))
        weights.append(load_file(out / "model.safetensors"))
        assert len(pools) == (0 if threads == 1 else 6) and set(pools) <= {2}
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
