"""Training the unmixing-guided Mamba on a scene and its labels (the method of docs/method.md).

Scenes no larger than a window train whole, as the reference does; larger scenes train on the
windows (tiles) that contain training pixels. Validation and test metrics go through
:func:`hsimap.inference.window_products`, the function prediction uses.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm import tqdm

from hsimap import __version__
from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError
from hsimap.inference import model_input, window_products
from hsimap.io.files import output_stem
from hsimap.io.labels import split_labels
from hsimap.io.rasters import Grid
from hsimap.io.scene import read_window, usable_bands
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.losses import make_optimizer, sad_loss, sparsity_loss
from hsimap.model.naming import endmember_names
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.model.store import (
    ModelCard,
    Scaling,
    TrainedModel,
    check_model_folder,
    model_hash,
    save_model,
)
from hsimap.model.vca import VCA_SAMPLE, vca_best
from hsimap.windows import Tile, dead_bands, scan_scene, tiles


@dataclass
class TrainOptions:
    """Everything ``hsimap train`` can be told. Flat, so that one line sets what a run changes;
    grouped here by what each setting governs."""

    # Architecture (ModelConfig): P, R, D, windows, ablations.
    endmembers: int | None = None      # default: classes + 2, at least 4
    variants: int = 10
    hidden: int = 128
    window: int = 128
    halo: int = 16
    tokens: str = "cluster"
    unmixing: bool = True
    # Optimisation.
    epochs: int = 500
    lr: float = 1e-3
    endmember_lr: float = 5e-4
    decay: float = 0.9
    val_every: int = 10
    recon_weight: float = 0.01
    sparsity_weight: float = 0.001
    ema_alpha: float = 0.9
    ema_weight: float = 0.3
    # Protocol: which labelled pixels train, validate and test.
    train_per_class: int = 30
    val_per_class: int = 10
    train_fraction: float | None = None
    seed: int = 0
    # Naming: the library whose nearest spectra name the endmembers (None: embedded USGS).
    name_library: str | None = None
    # Runtime.
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True

    def check(self) -> None:
        """Refuse settings that cannot run, in one line each."""
        positive = {"epochs": self.epochs, "variants": self.variants, "hidden": self.hidden,
                    "window": self.window, "val_every": self.val_every}
        for name, value in positive.items():
            if value < 1:
                raise HsimapError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.endmembers is not None and self.endmembers < 2:
            raise HsimapError(f"--endmembers must be at least 2, got {self.endmembers}")
        if self.hidden % 4:
            raise HsimapError(f"--hidden must be a multiple of 4, got {self.hidden}")
        if self.seed < 0:
            raise HsimapError(f"--seed must be non-negative, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise HsimapError(f"--threads must be at least 1, got {self.threads}")
        if not 0 <= 2 * self.halo < self.window:
            raise HsimapError(f"--halo must be non-negative and less than half the window "
                              f"({self.window}), got {self.halo}")


@dataclass
class TrainResult:
    model: TrainedModel
    best_epoch: int
    val_metrics: Metrics
    test_metrics: Metrics | None
    seconds: float
    seconds_per_epoch: float
    stopped_early: bool


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
        self.train_mask = torch.from_numpy(split == Split.TRAIN) & self.valid
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


def evaluate_split(model: TrainedModel, scenes: list[TrainScene], subset: int) -> Metrics:
    """Predict the tiles holding pixels of ``subset`` in every scene and score them there."""
    truth, pred = [], []
    for sc in scenes:
        for t in sc.grid:
            sel = sc.split[t.core_rows, t.core_cols] == subset
            if not sel.any():
                continue
            values, valid = read_window(sc.data, t.rows, t.cols, valid_bands=model.band_indices)
            prod = window_products(model, values, valid, (t.row, t.col))
            rs, cs = t.core_in_read
            truth.append(sc.labels[t.core_rows, t.core_cols][sel])
            pred.append(prod.classes[rs, cs][sel])
    return classification_metrics(np.concatenate(truth), np.concatenate(pred),
                                  model.class_table.ids)


@dataclass
class TrainScene:
    """One flight line of a training run: the scene, its labels on its grid, its tiles, and
    which of its labelled pixels train, validate and test (set by the run's one split)."""

    data: xr.DataArray
    labels: np.ndarray
    grid: list[Tile] = field(default_factory=list)
    split: np.ndarray | None = None

    @property
    def name(self) -> str:
        return output_stem(self.data.attrs.get("source", "scene"))


def split_names(scenes: list[TrainScene]) -> list[str]:
    """``split.tif`` for one scene; ``split_<stem>.tif`` for several (``_2``... when two
    scenes share a stem)."""
    if len(scenes) == 1:
        return ["split.tif"]
    names: list[str] = []
    for sc in scenes:
        base, k = f"split_{sc.name}", 1
        name = f"{base}.tif"
        while name in names:
            k += 1
            name = f"{base}_{k}.tif"
        names.append(name)
    return names


@dataclass
class _Setup:
    """What a run fixes before the first epoch: bands, split, tiles, scaling, the card."""

    bands: np.ndarray
    scenes: list[TrainScene]
    card: ModelCard
    cfg: ModelConfig


def _same_bands(scenes: list[TrainScene]) -> None:
    """Several scenes train one model only if their bands are the same (count, wavelengths)."""
    first = scenes[0].data
    for sc in scenes[1:]:
        d = sc.data
        if d.sizes["band"] != first.sizes["band"]:
            raise HsimapError(f"{sc.name}: {d.sizes['band']} bands, {scenes[0].name} "
                              f"{first.sizes['band']}; scenes of one model need the same bands")
        a, b = first.coords["wavelength"].values, d.coords["wavelength"].values
        if not np.allclose(a, b, rtol=0, atol=0.5, equal_nan=True):
            raise HsimapError(f"{sc.name}: wavelengths differ from {scenes[0].name}'s; scenes "
                              "of one model need the same bands")


def _setup(scenes: list[TrainScene], class_table: ClassTable, opts: TrainOptions) -> _Setup:
    """Check the inputs and fix everything the run depends on, before any fitting: the bands
    every scene has data in, one split and one scaling over all scenes."""
    for sc in scenes:
        height, width = sc.data.sizes["y"], sc.data.sizes["x"]
        if sc.labels.shape != (height, width):
            raise HsimapError(f"labels are {sc.labels.shape[1]} x {sc.labels.shape[0]} px, the "
                              f"scene {sc.name} {width} x {height}")
        sc.grid = tiles(height, width, opts.window, opts.halo)
    _same_bands(scenes)
    scene = scenes[0].data
    bands = usable_bands(scene)
    for sc in scenes[1:]:
        bands = np.intersect1d(bands, usable_bands(sc.data))
    dead = np.zeros(len(bands), bool)
    for sc in scenes:
        dead |= dead_bands(sc.data, sc.grid, bands)
    excluded, bands = bands[dead], bands[~dead]
    n_classes = len(class_table.ids)
    p = opts.endmembers or max(4, n_classes + 2)
    if len(bands) < p:
        raise HsimapError(f"the scene has {len(bands)} usable bands, fewer than the {p} "
                          "endmembers asked for; use --endmembers with a smaller number")
    if n_classes < 2:
        raise HsimapError("labels hold a single class; classification needs at least two")
    # One split over all scenes: the per-class counts hold for the campaign, not per line.
    flat = np.concatenate([sc.labels.ravel() for sc in scenes])
    split = split_labels(flat, class_table.ids, train_per_class=opts.train_per_class,
                         val_per_class=opts.val_per_class, train_fraction=opts.train_fraction,
                         seed=opts.seed)
    if not (split == Split.VALIDATION).any():
        raise HsimapError("too few labelled pixels for a validation set (need at least 3 in a "
                          "class)")
    start = 0
    for sc in scenes:
        sc.split = split[start:start + sc.labels.size].reshape(sc.labels.shape)
        start += sc.labels.size
    scans = [scan_scene(sc.data, sc.grid, bands) for sc in scenes]
    lo, hi = min(x.lo for x in scans), max(x.hi for x in scans)
    wl = scene.coords["wavelength"].values
    cfg = ModelConfig(bands=len(bands), classes=n_classes, endmembers=p,
                      variants=opts.variants, hidden=opts.hidden, tokens=opts.tokens,
                      unmixing=opts.unmixing, coord_period=opts.window)
    card = ModelCard(
        config=cfg, classes=class_table, scene_bands=int(scene.sizes["band"]),
        bands_used=[int(b) for b in bands], excluded_bands=[int(b) for b in excluded],
        scaling=Scaling(lo, hi),
        window=opts.window, halo=opts.halo,
        endmember_names=[f"endmember {i + 1}" for i in range(p)],
        scene_wavelengths=[float(v) for v in wl] if np.all(np.isfinite(wl)) else None,
        scene=scene.attrs.get("source"), hsimap_version=__version__,
        scenes=[str(sc.data.attrs.get("source")) for sc in scenes] if len(scenes) > 1 else None,
        protocol={"train_per_class": opts.train_per_class,
                  "val_per_class": opts.val_per_class,
                  "train_fraction": opts.train_fraction, "seed": opts.seed,
                  "pixels": {s.name.lower(): int((split == s).sum()) for s in Split}},
        options={k: v for k, v in asdict(opts).items() if k != "progress"},
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )
    return _Setup(bands, scenes, card, cfg)


def _training_windows(model: TrainedModel, setup: _Setup) -> list[_Window]:
    """The tiles whose read window holds training pixels not yet covered, held in memory."""
    lut = np.full(max(int(sc.labels.max()) for sc in setup.scenes) + 1, -1, dtype=np.int64)
    for i, c in enumerate(model.class_table.ids):
        lut[c] = i
    windows = []
    for sc in setup.scenes:
        seen = np.zeros(sc.labels.shape, dtype=bool)
        for t in sc.grid:
            s = sc.split[t.rows, t.cols]
            fresh = (s == Split.TRAIN) & ~seen[t.rows, t.cols]
            if not fresh.any():
                continue
            seen[t.rows, t.cols] |= s == Split.TRAIN
            values, valid = read_window(sc.data, t.rows, t.cols, valid_bands=setup.bands)
            windows.append(_Window(t, model_input(model, values, valid), valid,
                                   lut[sc.labels[t.rows, t.cols]], s))
    if not windows:
        raise HsimapError("no training pixels fall on valid scene pixels")
    return windows


def _init_endmembers(net: UnmixingGuidedMamba, windows: list[_Window], seed: int) -> None:
    """VCA on a sample of the training windows' valid pixels starts the endmember bank."""
    p = net.cfg.endmembers
    rng = np.random.default_rng(seed)
    pix = np.concatenate([w.x[0][:, w.valid].numpy().T for w in windows])
    if len(pix) > VCA_SAMPLE:
        pix = pix[rng.choice(len(pix), VCA_SAMPLE, replace=False)]
    if len(pix) < p:
        raise HsimapError(f"only {len(pix)} valid pixels, fewer than {p} endmembers")
    net.unmixing.init_endmembers(torch.from_numpy(vca_best(pix, p, seed=seed)))


@dataclass
class _Fit:
    """One training run's moving parts: the epoch loop, validation and the best state."""

    model: TrainedModel
    setup: _Setup
    windows: list[_Window]
    opts: TrainOptions
    history: list[dict] = field(default_factory=list)
    best_key: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict | None = None
    best_epoch: int = 0
    best_val: Metrics | None = None

    def __post_init__(self) -> None:
        o = self.opts
        self.net = self.model.network
        self.device = torch.device(o.device)
        self.optim, self.sched = make_optimizer(self.net, lr=o.lr, endmember_lr=o.endmember_lr,
                                                epochs=o.epochs, decay=o.decay)
        self.gen = torch.Generator().manual_seed(o.seed)
        self.rampup = max(1, o.epochs // 10)

    def epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training windows in random order; mean losses."""
        o, dev, net = self.opts, self.device, self.net
        net.train()
        order = torch.randperm(len(self.windows), generator=self.gen).tolist()
        sums = {"loss": 0.0, "ce": 0.0, "sad": 0.0, "sparsity": 0.0}
        beta = o.ema_weight * sigmoid_rampup(epoch - 1, self.rampup)
        for k in order:
            w = self.windows[k]
            x, valid, mask = w.x.to(dev), w.valid.to(dev), w.train_mask.to(dev)
            teacher = w.teacher()
            out = net(x, valid, (w.tile.row, w.tile.col), need=mask,
                      teacher=None if teacher is None else teacher.to(dev),
                      teacher_weight=beta, generator=self.gen)
            ce = F.cross_entropy(out.logits[0][:, mask].T, w.target.to(dev)[mask])
            sad = sad_loss(out.reconstruction, x, valid)
            sparse = sparsity_loss(out.abundances, valid)
            loss = ce
            if o.unmixing:
                loss = loss + o.recon_weight * sad + o.sparsity_weight * sparse
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            self.optim.step()
            w.update(out.abundances.cpu(), o.ema_alpha)
            for name, val in (("loss", loss), ("ce", ce), ("sad", sad), ("sparsity", sparse)):
                sums[name] += float(val.detach()) / len(self.windows)
        self.sched.step()
        return sums

    def validate(self, epoch: int) -> None:
        """Score the validation pixels; keep the state with the best OA (ties: lower loss)."""
        self.net.eval()
        m = evaluate_split(self.model, self.setup.scenes, Split.VALIDATION)
        self.net.train()
        key = (m.overall_accuracy, -self.history[-1]["loss"] if self.history else 0.0)
        if key > self.best_key:
            self.best_key, self.best_epoch, self.best_val = key, epoch, m
            self.best_state = copy.deepcopy(self.net.state_dict())
        self.history[-1]["val_oa"] = m.overall_accuracy

    def run(self) -> bool:
        """All epochs, validating every ``val_every``; True when interrupted (Ctrl-C)."""
        o = self.opts
        bar = tqdm(total=o.epochs, desc="train", unit="epoch", disable=not o.progress,
                   dynamic_ncols=True)
        epoch = 0
        try:
            for epoch in range(1, o.epochs + 1):
                t0 = time.perf_counter()
                sums = self.epoch(epoch)
                self.history.append({"epoch": epoch, **sums,
                                     "lr": self.optim.param_groups[0]["lr"],
                                     "seconds": time.perf_counter() - t0, "val_oa": ""})
                if epoch % o.val_every == 0 or epoch == o.epochs:
                    self.validate(epoch)
                bar.set_postfix(loss=f"{sums['loss']:.3f}", ce=f"{sums['ce']:.3f}",
                                sad=f"{sums['sad']:.3f}",
                                val_oa=f"{self.best_key[0]:.3f}" if self.best_val else "-")
                bar.update(1)
        except KeyboardInterrupt:
            bar.write("interrupted: keeping the best model so far")
            if self.history and self.best_state is None:
                self.validate(epoch)
            return True
        finally:
            bar.close()
        return False


def train(scene: xr.DataArray | Sequence[xr.DataArray],
          labels: np.ndarray | Sequence[np.ndarray], class_table: ClassTable,
          out_dir: str | Path, opts: TrainOptions | None = None, *,
          overwrite: bool = False) -> TrainResult:
    """Train a model and write its folder (weights, card, history, split rasters) to ``out_dir``.

    ``scene`` and ``labels`` may be lists, one label array per scene on its grid (several
    flight lines, one model): one split and one scaling over all scenes; the split is written
    per scene (``split_<stem>.tif``) and the card lists the scenes.

    Everything that can be checked is checked before the first epoch: the options, the
    labels, and that ``out_dir`` can be written and holds no model (unless ``overwrite``).
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
    t_start = time.perf_counter()
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    setup = _setup(scenes, class_table, opts)
    net = UnmixingGuidedMamba(setup.cfg)
    model = TrainedModel(net, setup.card)
    windows = _training_windows(model, setup)
    _init_endmembers(net, windows, opts.seed)
    net.to(torch.device(opts.device))

    fit = _Fit(model, setup, windows, opts)
    stopped = fit.run()
    if fit.best_state is None:
        raise HsimapError("training stopped before the first epoch finished; nothing saved")
    net.load_state_dict(fit.best_state)
    net.eval()
    test = None
    if any((sc.split == Split.TEST).any() for sc in scenes):
        test = evaluate_split(model, scenes, Split.TEST)
    seconds = time.perf_counter() - t_start
    per_epoch = float(np.mean([h["seconds"] for h in fit.history]))
    card = setup.card
    card.model_hash = model_hash(net)
    card.endmember_names = endmember_names(*model.endmember_spectra(), opts.name_library)
    card.training = {"epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
                     "stopped_early": stopped, "seconds": round(seconds, 2),
                     "seconds_per_epoch": round(per_epoch, 4)}
    card.validation_metrics = fit.best_val.to_dict()
    card.test_metrics = test.to_dict() if test is not None else None
    net.to("cpu")
    splits = {name: (sc.split, Grid.from_scene(sc.data))
              for name, sc in zip(split_names(scenes), scenes, strict=True)}
    save_model(out_dir, net, card, history=fit.history, splits=splits, overwrite=overwrite)
    return TrainResult(model, fit.best_epoch, fit.best_val, test, seconds, per_epoch, stopped)
