"""Precision: the 1 x 1 convolutions as matrix products and the gates' averages taken first are
the same numbers as the layers they replace; bf16 gives the class map of fp32 (99.5% or more);
``auto`` follows the hardware; the choice is recorded in every raster."""

from __future__ import annotations

import pytest
import rasterio
import torch
import torch.nn.functional as F

from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene
from hsimap.model.network import CoordinateGate, ModelConfig, UnmixingGuidedMamba
from hsimap.model.precision import (
    bf16_hardware,
    pointwise,
    precision_of,
    resolve_precision,
    set_precision,
)
from hsimap.workflows.options import PredictOptions
from hsimap.workflows.predict import predict_scene


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def test_pointwise_is_a_1x1_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, 4, generator=g, dtype=torch.float64)
    w = torch.randn(6, 7, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    assert _rel(pointwise(x, w, b), F.conv2d(x, w, b)) < 1e-14
    # bf16 is another number, but close: 8 bits of mantissa, float32 accumulation.
    x32, w32, b32 = x.float(), w.float(), b.float()
    assert _rel(pointwise(x32, w32, b32, torch.bfloat16), F.conv2d(x32, w32, b32)) < 2e-2


def _gate_by_definition(gate: CoordinateGate, x, coords, valid):
    """The gate as the method states it: K and V projected at every pixel, then averaged."""
    q = gate.q_proj(torch.cat([x, coords.expand(x.shape[0], -1, -1, -1)], dim=1))
    k, v = gate.k_proj(x), gate.v_proj(x)
    if gate.mode == "channel":
        k, v = k.mean(1, keepdim=True), v.mean(1, keepdim=True)
    else:
        m = valid[:, None].to(x.dtype)
        k = (k * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1)
        v = (v * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp_min(1)
    return x + torch.tanh(q * k) * v


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_the_gates_average_first_and_give_the_same_numbers(mode):
    torch.manual_seed(0)
    gate = CoordinateGate(8, mode).double()
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    coords = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    valid = torch.rand(2, 9, 11) > 0.3
    valid[0, 4] = False       # a row without valid pixels: its K is 0, not the bias
    valid[1, :, 6] = False    # a column likewise for V
    with torch.no_grad():
        assert _rel(gate(x, coords, valid), _gate_by_definition(gate, x, coords, valid)) < 1e-12


def test_auto_follows_the_hardware_and_bad_names_are_refused():
    assert resolve_precision("auto") == ("bf16" if bf16_hardware() else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(HsimapError, match="--precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16")


def test_a_batch_in_bf16_gives_each_window_what_it_gets_alone():
    cfg = ModelConfig(bands=12, classes=3, endmembers=3, hidden=16, min_tokens=5)
    torch.manual_seed(1)
    net = set_precision(UnmixingGuidedMamba(cfg).eval(), "bf16")
    assert precision_of(net) == "bf16"
    x = torch.rand(3, 12, 24, 24)
    valid = torch.ones(3, 24, 24, dtype=torch.bool)
    valid[1, :10] = False
    origins = [(0, 0), (24, 8), (100, 37)]
    with torch.no_grad():
        batch = net(x, valid, origins)
        alone = [net(x[k:k + 1], valid[k], origins[k]) for k in range(3)]
    for k in range(3):
        # bf16 products round by the batch's shape too; the agreement is bf16's, not exact.
        torch.testing.assert_close(batch.logits[k], alone[k].logits[0], rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(batch.abundances[k], alone[k].abundances[0], rtol=2e-2,
                                   atol=2e-2)


def test_bf16_gives_the_class_map_of_fp32_and_says_so(trained, tmp_path):
    scene = open_scene(trained.made.scene)
    maps = {}
    for precision in ("fp32", "bf16"):
        report = predict_scene(scene, trained.model, tmp_path / precision,
                               PredictOptions(precision=precision))
        with rasterio.open(report.paths["classes"]) as src:
            maps[precision] = src.read(1)
            assert src.tags()["HSIMAP_PRECISION"] == precision
        with rasterio.open(report.paths["abundances"]) as src:
            assert src.tags()["HSIMAP_PRECISION"] == precision
    data = maps["fp32"] != 0
    agree = float((maps["fp32"] == maps["bf16"])[data].mean())
    assert agree >= 0.995, agree
    trained.model.use_precision("auto")
    assert trained.model.precision == resolve_precision("auto")


def test_unmix_records_the_precision_of_its_abundance_pass(tmp_path):
    from hsimap.synth import SynthSpec, make_scene
    from hsimap.workflows.unmix import unmix

    made = make_scene(tmp_path / "s.tif", SynthSpec(width=48, height=40, bands=16, seed=2))
    scene = open_scene(made.scene)
    tags = {}
    for precision in ("fp32", "bf16"):
        r = unmix(scene, tmp_path / precision, endmembers=3, epochs=2, window=32, halo=4,
                  hidden=16, progress=False, precision=precision, solver="network")
        with rasterio.open(r.paths["abundances"]) as src:
            tags[precision] = src.tags()["HSIMAP_PRECISION"]
    assert tags == {"fp32": "fp32", "bf16": "bf16"}
    # The default solver (SCLSU) runs no network over the pixels: no precision to record.
    r = unmix(scene, tmp_path / "sclsu", endmembers=3, epochs=2, window=32, halo=4, hidden=16,
              progress=False, precision="bf16")
    with rasterio.open(r.paths["abundances"]) as src:
        assert "HSIMAP_PRECISION" not in src.tags() and src.tags()["HSIMAP_SOLVER"] == "sclsu"
    with pytest.raises(HsimapError, match="--precision must be one of"):
        unmix(scene, tmp_path / "bad", endmembers=3, precision="half", progress=False)
