"""Training the unmixing-guided Mamba on a scene and its labels (the method of docs/method.md).

Scenes no larger than a window train whole, as the reference does; larger scenes train on the
windows (tiles) that contain training pixels. Validation and test metrics go through
:func:`hsimap.inference.window_products`, the function prediction uses.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm import tqdm

from hsimap import __version__
from hsimap.errors import HsimapError
from hsimap.inference import model_input, window_products
from hsimap.io.scene import read_window
from hsimap.io.writers import ClassTable, Grid, write_raster
from hsimap.labels import split_labels
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.model.store import TrainedModel, save_model
from hsimap.model.vca import vca_best
from hsimap.windows import Tile, tiles


@dataclass
class TrainOptions:
    epochs: int = 500
    endmembers: int | None = None      # default: classes + 2, at least 4
    variants: int = 10
    hidden: int = 128
    window: int = 128
    halo: int = 16
    lr: float = 1e-3
    endmember_lr: float = 5e-4
    decay: float = 0.9
    val_every: int = 10
    train_per_class: int = 30
    val_per_class: int = 10
    train_fraction: float | None = None
    tokens: str = "cluster"
    unmixing: bool = True
    recon_weight: float = 0.01
    sparsity_weight: float = 0.001
    ema_alpha: float = 0.9
    ema_weight: float = 0.3
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True


@dataclass
class TrainResult:
    model: TrainedModel
    best_epoch: int
    val_metrics: Metrics
    test_metrics: Metrics | None
    seconds: float
    seconds_per_epoch: float
    stopped_early: bool


def _scaling(scene: xr.DataArray, bands: np.ndarray, grid: list[Tile]) -> tuple[float, float]:
    """Global min and max over valid pixels of the used bands (the reference's scaling),
    computed once, streaming over windows."""
    lo, hi = math.inf, -math.inf
    for t in grid:
        values, valid = read_window(scene, t.core_rows, t.core_cols, None)
        if valid.any():
            v = values[bands][:, valid]
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if not math.isfinite(lo):
        raise HsimapError("the scene has no valid pixels")
    return lo, hi


def sad_loss(recon: torch.Tensor, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean spectral angle between reconstruction and input over valid pixels."""
    r = recon[0][:, valid]
    y = x[0][:, valid]
    cos = (r * y).sum(0) / (r.norm(dim=0) * y.norm(dim=0) + 1e-7)
    return torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7)).mean()


def sparsity_loss(a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L_1/2 quasi-norm of the abundance vectors, (sum_p |a_p|^1/2)^2."""
    v = a[0][:, valid]
    return (v.abs() + 1e-12).sqrt().sum(0).pow(2).mean()


def sigmoid_rampup(epoch: int, length: int) -> float:
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), length) / length
    return math.exp(-5.0 * phase * phase)


class _Window:
    """A training window held in memory: scaled input, labels, masks, abundance average."""

    def __init__(self, tile: Tile, x: np.ndarray, valid: np.ndarray, target: np.ndarray,
                 split: np.ndarray):
        self.tile = tile
        self.x = torch.from_numpy(np.ascontiguousarray(x))[None]
        self.valid = torch.from_numpy(valid)
        self.target = torch.from_numpy(target.astype(np.int64))
        self.train_mask = torch.from_numpy(split == 1) & self.valid
        self.ema: torch.Tensor | None = None
        self.ema_count = 0
        self.alpha = 0.9

    def teacher(self) -> torch.Tensor | None:
        if self.ema is None:
            return None
        return self.ema / (1.0 - self.alpha ** self.ema_count)

    def update(self, a: torch.Tensor, alpha: float) -> None:
        self.alpha = alpha
        a = a.detach()
        self.ema = (1 - alpha) * a if self.ema is None else alpha * self.ema + (1 - alpha) * a
        self.ema_count += 1


def _model_hash(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluate_split(model: TrainedModel, scene: xr.DataArray, labels: np.ndarray,
                   split: np.ndarray, subset: int, grid: list[Tile]) -> Metrics:
    """Predict the tiles holding pixels of ``subset`` and score them there."""
    truth, pred = [], []
    for t in grid:
        sel = split[t.core_rows, t.core_cols] == subset
        if not sel.any():
            continue
        values, valid = read_window(scene, t.rows, t.cols)
        prod = window_products(model, values, valid, (t.row, t.col))
        rs, cs = t.core_in_read
        truth.append(labels[t.core_rows, t.core_cols][sel])
        pred.append(prod.classes[rs, cs][sel])
    return classification_metrics(np.concatenate(truth), np.concatenate(pred),
                                  model.class_table.ids)


def train(scene: xr.DataArray, labels: np.ndarray, class_table: ClassTable, out_dir: str | Path,
          opts: TrainOptions | None = None) -> TrainResult:
    """Train a model and write it (weights, card, history, split raster) to ``out_dir``."""
    opts = opts or TrainOptions()
    out_path = Path(out_dir)
    t_start = time.perf_counter()
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    height, width = scene.sizes["y"], scene.sizes["x"]
    if labels.shape != (height, width):
        raise HsimapError(f"labels are {labels.shape[1]} x {labels.shape[0]} px, the scene "
                          f"{width} x {height}")
    bands = np.flatnonzero(~scene.coords["bad_band"].values)
    n_classes = len(class_table.ids)
    p = opts.endmembers or max(4, n_classes + 2)
    if len(bands) < p:
        raise HsimapError(f"the scene has {len(bands)} usable bands, fewer than the {p} "
                          "endmembers asked for; use --endmembers with a smaller number")
    if n_classes < 2:
        raise HsimapError("labels hold a single class; classification needs at least two")
    split = split_labels(labels, class_table.ids, train_per_class=opts.train_per_class,
                         val_per_class=opts.val_per_class, train_fraction=opts.train_fraction,
                         seed=opts.seed)
    if not (split == 2).any():
        raise HsimapError("too few labelled pixels for a validation set (need at least 3 in a "
                          "class)")
    grid = tiles(height, width, opts.window, opts.halo)
    lo, hi = _scaling(scene, bands, grid)

    wl = scene.coords["wavelength"].values
    card = {
        "hsimap_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scene": scene.attrs.get("source"),
        "scene_bands": int(scene.sizes["band"]),
        "scene_wavelengths": [float(v) for v in wl] if np.all(np.isfinite(wl)) else None,
        "bands_used": [int(b) for b in bands],
        "scaling": {"method": "global min-max over valid pixels of the training scene",
                    "min": lo, "max": hi},
        "classes": class_table.to_dict(),
        "window": opts.window, "halo": opts.halo,
        "endmember_names": [f"endmember {i + 1}" for i in range(p)],
        "protocol": {"train_per_class": opts.train_per_class,
                     "val_per_class": opts.val_per_class,
                     "train_fraction": opts.train_fraction, "seed": opts.seed,
                     "pixels": {"train": int((split == 1).sum()),
                                "validation": int((split == 2).sum()),
                                "test": int((split == 3).sum())}},
        "options": {k: v for k, v in asdict(opts).items() if k != "progress"},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    cfg = ModelConfig(bands=len(bands), classes=n_classes, endmembers=p,
                      variants=opts.variants, hidden=opts.hidden, tokens=opts.tokens,
                      unmixing=opts.unmixing, coord_period=opts.window)
    net = UnmixingGuidedMamba(cfg)
    model = TrainedModel(net, card)

    # Training windows: the tiles whose read window holds training pixels, kept in memory.
    windows: list[_Window] = []
    id_to_index = {c: i for i, c in enumerate(class_table.ids)}
    lut = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    for c, i in id_to_index.items():
        lut[c] = i
    seen = np.zeros((height, width), dtype=bool)
    for t in grid:
        s = split[t.rows, t.cols]
        fresh = (s == 1) & ~seen[t.rows, t.cols]
        if not fresh.any():
            continue
        seen[t.rows, t.cols] |= s == 1
        values, valid = read_window(scene, t.rows, t.cols)
        target = lut[labels[t.rows, t.cols]]
        windows.append(_Window(t, model_input(model, values, valid), valid, target, s))
    if not windows:
        raise HsimapError("no training pixels fall on valid scene pixels")

    # VCA on a sample of valid pixels of the training windows initialises the endmember bank.
    rng = np.random.default_rng(opts.seed)
    pix = np.concatenate([w.x[0][:, w.valid].numpy().T for w in windows])
    if len(pix) > 20000:
        pix = pix[rng.choice(len(pix), 20000, replace=False)]
    if len(pix) < p:
        raise HsimapError(f"only {len(pix)} valid pixels, fewer than {p} endmembers")
    net.unmixing.init_endmembers(torch.from_numpy(vca_best(pix, p, seed=opts.seed)))

    dev = torch.device(opts.device)
    net.to(dev)
    endmember_params = [net.unmixing.endmembers]
    others = [q for n, q in net.named_parameters() if n != "unmixing.endmembers"]
    # fused: one kernel over all parameters instead of a dozen ops per parameter tensor.
    optim = torch.optim.Adam([{"params": others, "lr": opts.lr},
                              {"params": endmember_params, "lr": opts.endmember_lr}],
                             fused=True)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, opts.epochs // 10),
                                            gamma=opts.decay)
    gen = torch.Generator().manual_seed(opts.seed)
    rampup = max(1, opts.epochs // 10)
    history: list[dict] = []
    best = (-1.0, -math.inf)
    best_state, best_epoch, best_val = None, 0, None
    stopped = False
    bar = tqdm(total=opts.epochs, desc="train", unit="epoch", disable=not opts.progress,
               dynamic_ncols=True)
    epoch_times = []

    def validate(epoch: int) -> None:
        nonlocal best, best_state, best_epoch, best_val
        net.eval()
        m = evaluate_split(model, scene, labels, split, 2, grid)
        net.train()
        key = (m.overall_accuracy, -history[-1]["loss"] if history else 0.0)
        if key > best:
            best, best_state, best_epoch, best_val = key, copy.deepcopy(net.state_dict()), \
                epoch, m
        history[-1]["val_oa"] = m.overall_accuracy

    epoch = 0
    try:
        for epoch in range(1, opts.epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = torch.randperm(len(windows), generator=gen).tolist()
            sums = {"loss": 0.0, "ce": 0.0, "sad": 0.0, "sparsity": 0.0}
            beta = opts.ema_weight * sigmoid_rampup(epoch - 1, rampup)
            for k in order:
                w = windows[k]
                x, valid = w.x.to(dev), w.valid.to(dev)
                teacher = w.teacher()
                out = net(x, valid, (w.tile.row, w.tile.col), need=w.train_mask.to(dev),
                          teacher=None if teacher is None else teacher.to(dev),
                          teacher_weight=beta, generator=gen)
                logits = out.logits[0][:, w.train_mask.to(dev)].T
                ce = F.cross_entropy(logits, w.target.to(dev)[w.train_mask.to(dev)])
                sad = sad_loss(out.reconstruction, x, valid)
                sparse = sparsity_loss(out.abundances, valid)
                loss = ce
                if opts.unmixing:
                    loss = loss + opts.recon_weight * sad + opts.sparsity_weight * sparse
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                w.update(out.abundances.cpu(), opts.ema_alpha)
                for name, val in (("loss", loss), ("ce", ce), ("sad", sad),
                                  ("sparsity", sparse)):
                    sums[name] += float(val.detach()) / len(windows)
            sched.step()
            epoch_times.append(time.perf_counter() - t0)
            history.append({"epoch": epoch, **sums, "lr": optim.param_groups[0]["lr"],
                            "seconds": epoch_times[-1], "val_oa": ""})
            if epoch % opts.val_every == 0 or epoch == opts.epochs:
                validate(epoch)
            bar.set_postfix(loss=f"{sums['loss']:.3f}", ce=f"{sums['ce']:.3f}",
                            sad=f"{sums['sad']:.3f}",
                            val_oa=f"{best[0]:.3f}" if best_val else "-")
            bar.update(1)
    except KeyboardInterrupt:
        stopped = True
        bar.write("interrupted: keeping the best model so far")
        if history and best_state is None:
            validate(epoch)
    finally:
        bar.close()
    if best_state is None:
        raise HsimapError("training stopped before the first epoch finished; nothing saved")
    net.load_state_dict(best_state)
    net.eval()
    test = evaluate_split(model, scene, labels, split, 3, grid) if (split == 3).any() else None
    seconds = time.perf_counter() - t_start
    card["model_hash"] = _model_hash(net)
    card["training"] = {"epochs_run": len(history), "best_epoch": best_epoch,
                        "stopped_early": stopped, "seconds": round(seconds, 2),
                        "seconds_per_epoch": round(float(np.mean(epoch_times)), 4)}
    card["validation_metrics"] = best_val.to_dict()
    card["test_metrics"] = test.to_dict() if test is not None else None
    net.to("cpu")
    out_path.mkdir(parents=True, exist_ok=True)
    save_model(out_path, net, card)
    _write_history(out_path / "history.csv", history)
    write_raster(out_path / "split.tif", split, Grid.from_scene(scene),
                 class_table=ClassTable([1, 2, 3], ["train", "validation", "test"]),
                 overwrite=True)
    (out_path / "classes.json").write_text(json.dumps(class_table.to_dict(), indent=2))
    return TrainResult(model, best_epoch, best_val, test, seconds,
                       float(np.mean(epoch_times)), stopped)


def _write_history(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
        w.writeheader()
        w.writerows(history)
