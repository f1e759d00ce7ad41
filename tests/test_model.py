"""The model: Mamba backend, unmixing constraints, clustering tokens, determinism, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsimap.errors import HsimapError
from hsimap.inference import window_products
from hsimap.io.scene import open_scene, read_window
from hsimap.model.mamba import MAMBA_PARAMETERS, Mamba
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.model.store import load_model
from hsimap.model.tokens import cluster_sequences, token_budgets, unselected
from hsimap.model.vca import fcls, vca


def test_mamba_parameters_are_mamba_ssm_names():
    assert set(Mamba(32).state_dict()) == set(MAMBA_PARAMETERS)
    net = UnmixingGuidedMamba(ModelConfig(bands=10, classes=3, endmembers=4, hidden=32))
    blocks = [m for m in net.modules() if isinstance(m, Mamba)]
    assert len(blocks) == 2 * (4 + 1)  # a Mamba per cluster plus a shared one, per branch
    for name, module in net.named_modules():
        if isinstance(module, Mamba):
            keys = {k[len(name) + 1:] for k in net.state_dict() if k.startswith(name + ".")}
            assert keys == set(MAMBA_PARAMETERS)


def _sequential_reference(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The selective SSM written as the plain recurrence, one step at a time."""
    _, length, _ = x.shape
    xz = m.in_proj(x)
    u, z = xz.chunk(2, dim=-1)
    u = torch.nn.functional.silu(m.conv1d(u.transpose(1, 2))[:, :, :length].transpose(1, 2))
    dbc = m.x_proj(u)
    r, n = m.config.dt_rank, m.config.d_state
    dt, b, c = torch.split(dbc, [r, n, n], dim=-1)
    delta = torch.nn.functional.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    a = -torch.exp(m.A_log.float()).to(x.dtype)
    h = torch.zeros(x.shape[0], u.shape[-1], n, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * a) * h + \
            delta[:, t, :, None] * b[:, t, None, :] * u[:, t, :, None]
        ys.append((h @ c[:, t, :, None]).squeeze(-1) + m.D.to(x.dtype) * u[:, t])
    y = torch.stack(ys, dim=1) * torch.nn.functional.silu(z)
    return m.out_proj(y)


@pytest.mark.parametrize("length", [1, 4, 37, 256])
def test_fused_scan_matches_sequential_recurrence(length):
    torch.manual_seed(0)
    m = Mamba(16).double()
    x = torch.randn(3, length, 16, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(m(x).numpy(), _sequential_reference(m, x).numpy(),
                                   rtol=1e-6, atol=1e-6)


def test_token_budgets_follow_the_method():
    n = 2000
    a = torch.zeros(3, n)
    a[0, :1200] = 0.9   # large, confident cluster
    a[1, 1200:1500] = 0.9
    a[2] = 1 - a[0] - a[1]
    a[2, 1500:] = 1.0
    budgets = token_budgets(a)
    mass = a.sum(1)
    area = torch.tensor([(a[p] > 0.5 * a[p].max()).sum() for p in range(3)], dtype=torch.float)
    score = 0.3 * mass / mass.sum() + 0.7 * area / area.sum()
    expected = [max(100, int(np.ceil(0.1 * n * float(s)))) for s in score]
    assert budgets == expected
    # By hand: scores 0.582, 0.1455, 0.2725 give 117, 30 and 55 tokens; the floor of 100
    # lifts the two small clusters.
    assert budgets == [117, 100, 100]
    # capped at the number of pixels
    assert token_budgets(torch.full((2, 50), 0.5)) == [50, 50]


def test_cluster_sequences_ordered_by_abundance():
    torch.manual_seed(1)
    a = torch.rand(2, 500)
    seqs = cluster_sequences(a, [120, 130])
    for p, seq in enumerate(seqs):
        vals = a[p, seq]
        assert torch.all(vals[:-1] >= vals[1:])
        assert set(seq.tolist()) == set(torch.topk(a[p], len(seq)).indices.tolist())
    rest = unselected(500, seqs)
    assert torch.all(rest[:-1] < rest[1:])  # raster order
    assert len(set(rest.tolist()) & set(torch.cat(seqs).tolist())) == 0


def _tiny_net(**kw) -> UnmixingGuidedMamba:
    torch.manual_seed(0)
    return UnmixingGuidedMamba(ModelConfig(bands=12, classes=3, endmembers=4, hidden=32,
                                           variants=3, **kw))


def test_abundances_nonnegative_sum_to_one_and_reconstruct():
    net = _tiny_net().eval()
    x = torch.rand(1, 12, 30, 20)
    valid = torch.ones(30, 20, dtype=torch.bool)
    valid[:5, :5] = False
    with torch.no_grad():
        out = net(x, valid)
    a = out.abundances[0]
    assert torch.all(a >= 0)
    torch.testing.assert_close(a[:, valid].sum(0), torch.ones(int(valid.sum())))
    assert torch.all(a[:, ~valid] == 0)
    assert out.reconstruction.shape == x.shape
    w = out.variant_weights[0]
    torch.testing.assert_close(w.sum(1), torch.ones(4, 30, 20))


def test_inference_is_deterministic():
    net = _tiny_net().eval()
    x = torch.rand(1, 12, 40, 40)
    valid = torch.ones(40, 40, dtype=torch.bool)
    with torch.no_grad():
        a, b = net(x, valid, (7, 3)), net(x, valid, (7, 3))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.abundances, b.abundances)


def test_gradients_reach_every_parameter():
    net = _tiny_net().train()
    x = torch.rand(1, 12, 24, 24)
    valid = torch.ones(24, 24, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    out = net(x, valid, need=torch.ones(24, 24, dtype=torch.bool), generator=gen)
    loss = out.logits.square().mean() + out.reconstruction.mean() + out.abundances.sqrt().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_spectral_restriction_is_exact_for_needed_pixels():
    """Training computes the spectral branch only near labelled pixels; those logits must
    equal the ones from the full computation."""
    net = _tiny_net().train()
    net.apply(lambda m: m.eval() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)
              else None)
    x = torch.rand(1, 12, 28, 28)
    valid = torch.ones(28, 28, dtype=torch.bool)
    need = torch.zeros(28, 28, dtype=torch.bool)
    need[5, 7] = need[20, 21] = True
    with torch.no_grad():
        full = net(x, valid).logits[0][:, need]
        part = net(x, valid, need=need).logits[0][:, need]
    torch.testing.assert_close(part, full)


@pytest.mark.parametrize("kw", [{}, {"tokens": "raster"}])
def test_a_batch_equals_its_windows_one_at_a_time(kw):
    """B windows in one forward give each window what it gets alone: logits, abundances and
    the token sequences (different valid masks, so different sequence lengths, padded)."""
    net = _tiny_net(min_tokens=5, **kw).eval()
    torch.manual_seed(1)
    x = torch.rand(3, 12, 24, 24)
    valid = torch.ones(3, 24, 24, dtype=torch.bool)
    valid[1, :10] = False
    valid[2, 5:9, 3:20] = False
    origins = [(0, 0), (24, 8), (100, 37)]
    picked = []
    real = net.select_tokens
    net.select_tokens = lambda a: picked.append(real(a)) or picked[-1]
    with torch.no_grad():
        batch = net(x, valid, origins)
        alone = [net(x[k:k + 1], valid[k], origins[k]) for k in range(3)]
    batched_picks, single_picks = picked[:3], picked[3:]
    for k in range(3):
        torch.testing.assert_close(batch.logits[k], alone[k].logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.abundances[k], alone[k].abundances[0])
        torch.testing.assert_close(batch.reconstruction[k], alone[k].reconstruction[0])
        (seq_b, rest_b), (seq_s, rest_s) = batched_picks[k], single_picks[k]
        assert all(torch.equal(a, b) for a, b in zip(seq_b, seq_s, strict=True))
        assert torch.equal(rest_b, rest_s)
    if not kw:
        lengths = {len(s) for seqs, _ in batched_picks for s in seqs}
        assert len(lengths) > 1  # the padding was exercised


def test_ablations_change_the_token_path_and_only_it():
    """Both ablations read every pixel in raster order instead of the abundance clusters; with
    the method's weights loaded (the same parameter names), the logits change."""
    torch.manual_seed(1)
    x, valid = torch.rand(1, 12, 16, 16), torch.ones(16, 16, dtype=torch.bool)
    method = _tiny_net().eval()
    with torch.no_grad():
        a = method(x, valid).abundances[0].reshape(4, -1)
        seqs, rest = method.select_tokens(a)
        assert sum(len(q) for q in seqs) > 0 and len(rest) < a.shape[1]
        ref = method(x, valid).logits
        for kw in ({"tokens": "raster"}, {"unmixing": False}):
            net = _tiny_net(**kw).eval()
            net.load_state_dict(method.state_dict(), strict=True)
            seqs, rest = net.select_tokens(a)
            assert all(len(q) == 0 for q in seqs)
            assert torch.equal(rest, torch.arange(a.shape[1]))
            out = net(x, valid)
            assert out.logits.shape == (1, 3, 16, 16)
            assert not torch.allclose(out.logits, ref, atol=1e-4)
            torch.testing.assert_close(out.abundances, method(x, valid).abundances)


def test_vca_and_fcls_recover_synthetic_truth():
    """Linear mixtures of 4 real USGS spectra, with a few pure pixels, at 40 dB SNR."""
    from hsimap.data.usgs import library_spectra
    from hsimap.model.vca import match_endmembers

    rng = np.random.default_rng(0)
    lib, _, _ = library_spectra()
    e = lib[[0, 5, 16, 21]]
    a = np.vstack([rng.dirichlet(np.ones(4), 1500), np.eye(4)])
    x = a @ e
    x += rng.standard_normal(x.shape) * x.mean() / 100
    for projection in ("auto", "projective", "affine"):
        found = vca(x, 4, seed=0, projection=projection)
        assert match_endmembers(found, e)[1].max() < 3.0, projection
    est = fcls(x, e)
    assert np.all(est >= 0)
    np.testing.assert_allclose(est.sum(1), 1.0, atol=1e-9)
    assert np.sqrt(np.mean((est - a) ** 2)) < 0.05


def test_purify_averages_the_directions_of_the_pure_pixels_in_scene_units():
    """Shaded pure pixels (brightness 0.4-1.6) among mixtures that no material dominates to
    85%: the vertex VCA picks is a noisy extreme; purify averages the pure pixels' directions
    (a shaded pixel counts as much as a lit one) and gives them their mean brightness."""
    from hsimap.data.usgs import library_spectra
    from hsimap.model.vca import match_endmembers, purify

    rng = np.random.default_rng(1)
    lib, _, _ = library_spectra()
    e = lib[[0, 5, 16, 21]]
    mixed = rng.dirichlet(np.ones(4), 20000)
    share = mixed * np.linalg.norm(e, axis=1)          # each material's share of the signal
    mixed = mixed[(share / share.sum(1, keepdims=True)).max(1) < 0.8][:3000]
    a = np.vstack([mixed, np.repeat(np.eye(4), 200, axis=0)])
    bright = np.concatenate([rng.uniform(0.9, 1.1, len(mixed)), rng.uniform(0.4, 1.6, 800)])
    x = (a @ e) * bright[:, None] * (1 + 0.01 * rng.standard_normal((len(a), e.shape[1])))

    start = vca(x, 4, seed=0)
    cleaned = purify(x, start)
    order, angle = match_endmembers(cleaned, e)
    assert angle.max() < 0.05, angle                           # 1% noise, averaged away
    assert angle.max() < 0.5 * match_endmembers(start, e)[1].max()
    pure_brightness = [np.linalg.norm(x[3000 + 200 * k: 3200 + 200 * k], axis=1).mean()
                       for k in range(4)]
    np.testing.assert_allclose(np.linalg.norm(cleaned[order], axis=1), pure_brightness,
                               rtol=1e-3)
    # Fewer non-zero pixels than endmembers: nothing to average, the start is kept (not NaN).
    np.testing.assert_array_equal(purify(np.zeros((50, e.shape[1])), e), e.astype(np.float32))


def test_model_file_roundtrip(trained):
    made, model = trained.made, trained.model
    scene = open_scene(made.scene)
    values, valid = read_window(scene, slice(0, 64), slice(0, 64))
    again = load_model(trained.model_dir)
    a = window_products(model, values, valid, (0, 0))
    b = window_products(again, values, valid, (0, 0))
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.abundances, b.abundances)
    import json

    from hsimap.model.store import ModelCard

    on_disk = json.loads((trained.model_dir / "model.json").read_text())
    assert ModelCard.from_dict(on_disk) == again.card == model.card
    assert on_disk["model_hash"] == again.card.model_hash and len(on_disk["model_hash"]) == 16
    assert on_disk["test_metrics"]["pixels"] > 0 and on_disk["format"] == "hsimap-model/1"
    assert (trained.model_dir / "split.tif").exists()
    assert (trained.model_dir / "history.csv").read_text().startswith("step,")


def test_pickle_is_refused(tmp_path, trained):
    d = tmp_path / "evil"
    d.mkdir()
    (d / "model.json").write_text((trained.model_dir / "model.json").read_text())
    # pickle.dumps({"weights": [1, 2, 3]}, protocol=4), written out so nothing here pickles
    (d / "model.safetensors").write_bytes(
        b"\x80\x04\x95\x18\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x07weights"
        b"\x94]\x94(K\x01K\x02K\x03es.")
    with pytest.raises(HsimapError, match="never unpickles"):
        load_model(d)
    (d / "model.safetensors").unlink()
    (d / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(HsimapError, match="pickles"):
        load_model(d)


def test_trained_model_learns_synthetic_classes(trained):
    assert trained.result.test_metrics.overall_accuracy > 0.85


def test_training_gradients_are_the_same_on_every_run():
    """The cluster blocks' gradients are bit-identical from run to run on several threads: a
    pixel sits in several clusters' sequences, and a gather whose backward accumulates those
    repeats in no fixed order (indexing's, on several threads) made trainings drift apart."""
    from hsimap.model.network import ClusterMamba

    torch.manual_seed(0)
    block = ClusterMamba(ModelConfig(bands=12, classes=3, endmembers=4, hidden=64), 64,
                         spectral=False).train()
    x = torch.randn(40_000, 64, requires_grad=True)
    order = torch.randperm(40_000, generator=torch.Generator().manual_seed(1))
    # Every pixel in two sequences, as pixels are in several clusters' Top-K.
    sequences = [[order.roll(p * 10_000)[:20_000]] for p in range(4)]
    rest = [torch.arange(0, 40_000, 3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        grads = []
        for _ in range(3):
            x.grad = None
            out, _ = block(x, sequences, rest)
            out.pow(2).mean().backward()
            grads.append(x.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
