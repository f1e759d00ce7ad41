"""Training the unmixing-guided Mamba on scenes and their labels (the method of docs/method.md).

A run's cost follows its labels, not its scenes. It trains on *chips*: the scene's own
prediction tiles whose core holds a training pixel (:mod:`hsimap.sampling`), read from the
scene when needed through a cache of bounded size. Each step takes a mini-batch of chips
through the batched network; the schedule counts steps, not passes over the scene. Validation
scores a fixed, bounded sample of validation pixels, and the final test pass a bounded,
class-stratified sample of test pixels (``test_all`` for every one), both through
:func:`hsimap.inference.batch_products`, the function prediction uses.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm import tqdm

from hsimap._version import __version__
from hsimap.classes import ClassTable, Split
from hsimap.engine import map_tiles
from hsimap.errors import HsimapError, Interrupted
from hsimap.inference import Scaling as InputScaling
from hsimap.inference import apply_scaled, batch_products, model_input
from hsimap.io.files import output_stem
from hsimap.io.gdal import SCATTERED_CACHE_BYTES, bounded_write_cache
from hsimap.io.labels import split_labels
from hsimap.io.rasters import Grid
from hsimap.io.scene import read_window, usable_bands
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.baselines import KINDS, PixelClassifier
from hsimap.model.losses import make_optimizer, sad_loss, sparsity_loss
from hsimap.model.naming import endmember_names
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.model.store import (
    CARD,
    ModelCard,
    Scaling,
    TrainedModel,
    check_model_folder,
    model_hash,
    save_model,
    split_file_names,
)
from hsimap.model.vca import VCA_SAMPLE, vca_best
from hsimap.runtime import release_memory, seeded, thread_budget
from hsimap.sampling import Chip, label_chips, sample_tiles
from hsimap.windows import Tile, TrainingScan, tiles
from hsimap.workflows.classifiers import CHOICES, chip_pixels, choose, fit_baselines


@dataclass
class TrainOptions:
    """Everything ``hsimap train`` can be told. Flat, so that one line sets what a run changes;
    grouped here by what each setting governs."""

    # Architecture (ModelConfig): P, R, D, windows, ablations.
    endmembers: int | None = None      # default: classes + 2, at least 4
    variants: int = 10
    hidden: int = 128
    window: int = 64                   # the chip: training and prediction window, px
    halo: int = 8
    tokens: str = "cluster"
    unmixing: bool = True
    # Optimisation: a schedule in steps of ``batch`` chips.
    steps: int = 300
    batch: int = 4
    lr: float = 1e-3
    endmember_lr: float = 5e-4
    decay: float = 0.9
    val_every: int = 25
    recon_weight: float = 0.01
    sparsity_weight: float = 0.001
    ema_alpha: float = 0.9
    ema_weight: float = 0.3
    # Regularisation for few labels (0: off, the method as published): spectral augmentation
    # (each pixel's brightness scaled by up to +-augment, and Gaussian noise of augment / 10
    # in the [0, 1] input), label smoothing of the cross-entropy, decoupled weight decay.
    augment: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    # Protocol: which labelled pixels train, validate and test.
    train_per_class: int = 30
    val_per_class: int = 10
    train_fraction: float | None = None
    seed: int = 0
    # Bounded costs: validation and test samples, the chip cache.
    val_windows: int = 64
    test_windows: int = 256
    test_pixels: int = 50_000
    test_all: bool = False
    cache_mb: int = 512
    # Naming: the library whose nearest spectra name the endmembers (None: embedded USGS).
    name_library: str | None = None
    # Which classifier gives the classes: the network ("mamba"), a baseline alone ("svm",
    # "rf"), or the best of the three on the validation pixels ("auto").
    classifier: str = "mamba"
    # Runtime.
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True

    def check(self) -> None:
        """Refuse settings that cannot run, in one line each."""
        positive = {"steps": self.steps, "batch": self.batch, "variants": self.variants,
                    "hidden": self.hidden, "window": self.window, "val_every": self.val_every,
                    "val_windows": self.val_windows, "test_windows": self.test_windows,
                    "test_pixels": self.test_pixels, "cache_mb": self.cache_mb,
                    "train_per_class": self.train_per_class,
                    "val_per_class": self.val_per_class}
        for name, value in positive.items():
            if value < 1:
                raise HsimapError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.train_fraction is not None and not 0 < self.train_fraction < 1:
            raise HsimapError(f"--train-fraction must be above 0 and below 1 (a share of each "
                              f"class's labelled pixels), got {self.train_fraction:g}")
        if self.endmembers is not None and self.endmembers < 2:
            raise HsimapError(f"--endmembers must be at least 2, got {self.endmembers}")
        if self.hidden % 4:
            raise HsimapError(f"--hidden must be a multiple of 4, got {self.hidden}")
        if self.seed < 0:
            raise HsimapError(f"--seed must be non-negative, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise HsimapError(f"--threads must be at least 1, got {self.threads}")
        if self.window < 8:
            raise HsimapError(f"--window must be at least 8 px, got {self.window}")
        for name in ("augment", "label_smoothing", "weight_decay"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise HsimapError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.classifier not in CHOICES:
            raise HsimapError(f"--classifier must be one of {', '.join(CHOICES)}, got "
                              f"{self.classifier!r}")
        if not 0 <= 2 * self.halo < self.window:
            raise HsimapError(f"--halo must be non-negative and less than half the window "
                              f"({self.window}), got {self.halo}")


@dataclass
class TrainResult:
    model: TrainedModel
    best_step: int
    val_metrics: Metrics
    test_metrics: Metrics | None
    seconds: float
    seconds_per_step: float
    stopped_early: bool
    test_pixels: int = 0       # how many test pixels test_metrics scored
    # Every classifier fitted and its validation OA (one entry, except with --classifier auto).
    validation_oa: dict[str, float] = field(default_factory=dict)

    @property
    def classifier(self) -> str:
        """What gives the model's classes: "mamba", "svm" or "rf"."""
        return self.model.card.baseline or "mamba"


def sigmoid_rampup(step: int, length: int) -> float:
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0), length) / length
    return math.exp(-5.0 * phase * phase)


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
    """The split rasters' file names, one per scene (see :func:`split_file_names`)."""
    return split_file_names([str(sc.data.attrs.get("source", "scene")) for sc in scenes])


@dataclass
class _Setup:
    """What a run fixes before the first epoch: bands, split, tiles, scaling, the card."""

    bands: np.ndarray
    scenes: list[TrainScene]
    card: ModelCard
    cfg: ModelConfig
    sample: np.ndarray   # (n, bands) valid pixels drawn over the scenes, physical units


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
    # One read of each scene: the bands with no information anywhere, then the scaling and
    # the VCA sample of the others.
    passes = [TrainingScan(sc.data, sc.grid, bands, n=VCA_SAMPLE // len(scenes), seed=opts.seed)
              for sc in scenes]
    dead = np.logical_or.reduce([ps.dead for ps in passes])
    excluded, kept, bands = bands[dead], ~dead, bands[~dead]
    n_classes = len(class_table.ids)
    p = opts.endmembers or max(4, n_classes + 2)
    if len(bands) < p and opts.classifier not in KINDS:
        raise HsimapError(f"the scene has {len(bands)} usable bands, fewer than the {p} "
                          "endmembers asked for; use --endmembers with a smaller number")
    if n_classes < 2:
        raise HsimapError("labels hold a single class; classification needs at least two")
    # One split over all scenes: the per-class counts hold for the campaign, not per line.
    flat = np.concatenate([sc.labels.ravel() for sc in scenes])
    given = all(sc.split is not None for sc in scenes)
    if given:   # the caller's own split
        split = np.concatenate([np.asarray(sc.split).ravel() for sc in scenes])
        if np.any((split != 0) & (flat <= 0)):
            raise HsimapError("the split marks pixels that have no label")
        if not (split == Split.TRAIN).any():
            raise HsimapError("the split has no training pixels")
    else:
        split = split_labels(flat, class_table.ids, train_per_class=opts.train_per_class,
                             val_per_class=opts.val_per_class,
                             train_fraction=opts.train_fraction, seed=opts.seed)
    if not (split == Split.VALIDATION).any():
        raise HsimapError("too few labelled pixels for a validation set (need at least 3 in a "
                          "class)")
    start = 0
    for sc in scenes:
        sc.split = split[start:start + sc.labels.size].reshape(sc.labels.shape)
        start += sc.labels.size
    scans = [ps.finish(kept) for ps in passes]
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
                  "split": "given" if given else "drawn",
                  "pixels": {s.name.lower(): int((split == s).sum()) for s in Split}},
        options={k: v for k, v in asdict(opts).items() if k != "progress"},
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )
    return _Setup(bands, scenes, card, cfg, np.concatenate([x.raw for x in scans]))


@dataclass
class _ChipData:
    """A chip as the network takes it: scaled input, valid mask, class index per pixel
    (-1 where none) and the training pixels of its core, on the read window."""

    x: torch.Tensor          # (bands, h, w) float32
    valid: torch.Tensor      # (h, w) bool
    target: torch.Tensor     # (h, w) int64
    train: torch.Tensor      # (h, w) bool

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.x, self.valid, self.target,
                                                           self.train))


class ChipReader:
    """Training (or validation) chips, read from their scenes when asked for and kept in a
    cache of at most ``cache_bytes``: memory follows the cache and batch sizes, not how many
    chips the labels spread over."""

    def __init__(self, model: TrainedModel, scenes: list[TrainScene], chips: list[Chip],
                 cache_bytes: int):
        self.model, self.scenes, self.chips = model, scenes, chips
        self.cache_bytes = cache_bytes
        # Chips spread over a flight line are read from tiles that hold every band; a cache
        # that cannot hold them all makes each step decompress tiles again. When float32 chips
        # do not fit, they are kept as float16 (rounding of 5e-4 of the [0, 1] input, far
        # below a sensor's noise) and converted back as they are used.
        t = chips[0].tile
        per_chip = model.config.bands * t.height * t.width * 4
        self.half = len(chips) * per_chip > cache_bytes
        self._cache: dict[int, _ChipData] = {}
        self._held = 0
        lut = np.full(max(int(sc.labels.max()) for sc in scenes) + 1, -1, dtype=np.int64)
        for i, c in enumerate(model.class_table.ids):
            lut[c] = i
        self._lut = lut
        self.reads = 0

    def __len__(self) -> int:
        return len(self.chips)

    def clear(self) -> None:
        """Drop the cached chips (the fit is over: the test pass needs the memory)."""
        self._cache.clear()
        self._held = 0

    def __getitem__(self, i: int) -> _ChipData:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        chip = self.chips[i]
        sc, t = self.scenes[chip.scene], chip.tile
        values, valid = read_window(sc.data, t.rows, t.cols,
                                    valid_bands=self.model.band_indices)
        labels = sc.labels[t.rows, t.cols]
        target = self._lut[np.clip(labels, 0, len(self._lut) - 1)]
        train = np.zeros(valid.shape, bool)
        rs, cs = t.core_in_read
        train[rs, cs] = chip.mask
        train &= valid & (target >= 0)
        x = model_input(self.model, values, valid)
        data = _ChipData(torch.from_numpy(x.astype(np.float16) if self.half else x),
                         torch.from_numpy(valid), torch.from_numpy(target),
                         torch.from_numpy(train))
        self.reads += 1
        # Filled once, then kept: steps draw chips in fresh permutations, which a
        # least-recently-used cache smaller than the chips misses nearly always; a kept one
        # hits in proportion to its size.
        if self._held + data.nbytes <= self.cache_bytes:
            self._cache[i] = data
            self._held += data.nbytes
        return data


class AbundanceAverage:
    """Each chip's moving average of its past abundances (the reference's temporal ensemble,
    which picks tokens in training), for as many chips as ``max_bytes`` holds; a chip pushed
    out starts its average again."""

    def __init__(self, alpha: float, max_bytes: int):
        self.alpha, self.max_bytes = alpha, max_bytes
        self._avg: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()
        self._held = 0

    def teacher(self, i: int) -> torch.Tensor | None:
        got = self._avg.get(i)
        if got is None:
            return None
        self._avg.move_to_end(i)
        ema, count = got
        return ema / (1.0 - self.alpha ** count)

    def update(self, i: int, a: torch.Tensor) -> None:
        a = a.detach().cpu()
        got = self._avg.pop(i, None)
        if got is None:
            ema, count = (1 - self.alpha) * a, 1
            self._held += ema.numel() * ema.element_size()
        else:
            ema, count = self.alpha * got[0] + (1 - self.alpha) * a, got[1] + 1
        self._avg[i] = (ema, count)
        while self._held > self.max_bytes and len(self._avg) > 1:
            _, (old, _) = self._avg.popitem(last=False)
            self._held -= old.numel() * old.element_size()


def _init_endmembers(net: UnmixingGuidedMamba, pixels: np.ndarray, seed: int) -> None:
    """VCA on valid pixels drawn over the scenes (scaled) starts the endmember bank."""
    p = net.cfg.endmembers
    if len(pixels) < p:
        raise HsimapError(f"only {len(pixels)} valid pixels, fewer than {p} endmembers")
    net.unmixing.init_endmembers(torch.from_numpy(vca_best(pixels, p, seed=seed)))


def score_chips(model: TrainedModel, scenes: list[TrainScene], chips: list[Chip], *,
                batch: int, workers: int = 1, progress: bool = False,
                desc: str = "score") -> tuple[Metrics, int]:
    """Predict the tiles of ``chips`` as prediction does and score their masked pixels.

    Returns the metrics and how many pixels they count. With ``workers`` > 1 the tiles stream
    through the engine's threads (one torch thread each)."""
    truth, pred = [], []
    bar = tqdm(total=len(chips), desc=desc, unit="window", disable=not progress,
               dynamic_ncols=True, leave=False)

    def fn(windows):
        return [p.classes for p in batch_products(model, windows)]

    try:
        for s, sc in enumerate(scenes):
            mine = [c for c in chips if c.scene == s]
            if not mine:
                continue
            grid = [c.tile for c in mine]
            if workers > 1:
                maps = map_tiles(sc.data, grid, fn, workers=workers, batch=batch,
                                 on_tile=lambda _t: bar.update(1),
                                 valid_bands=model.band_indices,
                                 cache_bytes=SCATTERED_CACHE_BYTES)
            else:
                maps = []
                with bounded_write_cache(SCATTERED_CACHE_BYTES):
                    for i in range(0, len(grid), batch):
                        group = grid[i:i + batch]
                        windows = []
                        for t in group:
                            values, valid = read_window(sc.data, t.rows, t.cols,
                                                        valid_bands=model.band_indices)
                            windows.append((values, valid, (t.row, t.col)))
                        maps.extend(fn(windows))
                        bar.update(len(group))
            for c, m in zip(mine, maps, strict=True):
                rs, cs = c.tile.core_in_read
                truth.append(sc.labels[c.tile.core_rows, c.tile.core_cols][c.mask])
                pred.append(m[rs, cs][c.mask])
    finally:
        bar.close()
    t = np.concatenate(truth)
    return classification_metrics(t, np.concatenate(pred), model.class_table.ids), len(t)


@dataclass
class _Fit:
    """One training run's moving parts: the step loop, validation and the best state."""

    model: TrainedModel
    setup: _Setup
    reader: ChipReader
    val_reader: ChipReader
    opts: TrainOptions
    history: list[dict] = field(default_factory=list)
    best_key: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict | None = None
    best_step: int = 0
    best_val: Metrics | None = None

    def __post_init__(self) -> None:
        o = self.opts
        self.net = self.model.network
        self.device = torch.device(o.device)
        self.optim, self.sched = make_optimizer(self.net, lr=o.lr, endmember_lr=o.endmember_lr,
                                                steps=o.steps, decay=o.decay,
                                                weight_decay=o.weight_decay)
        self.gen = torch.Generator().manual_seed(o.seed)
        self.rampup = max(1, o.steps // 10)
        chip = self.reader.chips[0].tile
        p = self.net.cfg.endmembers
        per_chip = p * chip.height * chip.width * 4
        # The averages of as many chips as 64 steps visit, at least, within the cache budget.
        self.ema = AbundanceAverage(o.ema_alpha, max(64 * o.batch * per_chip,
                                                     o.cache_mb * 2 ** 19))
        self._queue: list[int] = []

    def _next_batch(self) -> list[int]:
        """The next ``batch`` chips of a stream of seeded permutations (all of them, when
        there are fewer): every chip is visited once before any is visited again."""
        n = len(self.reader)
        if n <= self.opts.batch:
            return list(range(n))
        while len(self._queue) < self.opts.batch:
            fresh = torch.randperm(n, generator=self.gen).tolist()
            self._queue.extend(i for i in fresh if i not in self._queue[:self.opts.batch])
        out, self._queue = self._queue[:self.opts.batch], self._queue[self.opts.batch:]
        return out

    def step(self, step: int) -> dict[str, float]:
        """One optimiser step on a mini-batch of chips; the batch's losses."""
        o, dev, net = self.opts, self.device, self.net
        net.train()
        ids = self._next_batch()
        beta = o.ema_weight * sigmoid_rampup(step - 1, self.rampup)
        # Each chip read once a step: with a cache smaller than a batch, asking the reader
        # again would read it from the scene again.
        data = {i: self.reader[i] for i in ids}
        groups: dict[tuple[int, int], list[int]] = {}
        for i in ids:
            groups.setdefault(tuple(data[i].valid.shape), []).append(i)
        labelled = sum(int(data[i].train.sum()) for i in ids)
        sums = {"loss": 0.0, "ce": 0.0, "sad": 0.0, "sparsity": 0.0}
        self.optim.zero_grad(set_to_none=True)
        for members in groups.values():
            chips = [data[i] for i in members]
            x = torch.stack([c.x for c in chips]).to(dev, torch.float32)
            if o.augment:
                x = self._augment(x)
            valid = torch.stack([c.valid for c in chips]).to(dev)
            need = torch.stack([c.train for c in chips]).to(dev)
            target = torch.stack([c.target for c in chips]).to(dev)
            teachers = [self.ema.teacher(i) for i in members]
            teacher = weight = None
            if any(t is not None for t in teachers):
                zero = torch.zeros_like(next(t for t in teachers if t is not None))
                teacher = torch.stack([zero if t is None else t for t in teachers]).to(dev)
                weight = torch.tensor([0.0 if t is None else beta for t in teachers])
            origins = [(self.reader.chips[i].tile.row, self.reader.chips[i].tile.col)
                       for i in members]
            out = net(x, valid, origins, need=need, teacher=teacher,
                      teacher_weight=0.0 if weight is None else weight.to(dev),
                      generator=self.gen)
            share = len(members) / len(ids)
            logits = out.logits.permute(0, 2, 3, 1)[need]                  # (labelled, C)
            ce = F.cross_entropy(logits, target[need], reduction="sum",
                                 label_smoothing=o.label_smoothing) / max(1, labelled)
            sad = sad_loss(out.reconstruction, x, valid)
            sparse = sparsity_loss(out.abundances, valid)
            loss = ce
            if o.unmixing:
                loss = loss + share * (o.recon_weight * sad + o.sparsity_weight * sparse)
            loss.backward()
            for i, a in zip(members, out.abundances, strict=True):
                self.ema.update(i, a)
            for name, val in (("loss", loss), ("ce", ce)):
                sums[name] += float(val.detach())
            sums["sad"] += share * float(sad.detach())
            sums["sparsity"] += share * float(sparse.detach())
        self.optim.step()
        self.sched.step()
        return sums

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Illumination and sensor noise a 30 m pixel's label does not depend on: a brightness
        factor per pixel and Gaussian noise, drawn from the run's generator."""
        a = self.opts.augment
        b, _, h, w = x.shape
        scale = 1 + a * (2 * torch.rand((b, 1, h, w), generator=self.gen) - 1)
        noise = torch.randn(x.shape, generator=self.gen) * (a / 10)
        return x * scale.to(x.device) + noise.to(x.device)

    @torch.no_grad()
    def score_validation(self) -> Metrics:
        """The validation sample's metrics, its windows run as prediction runs them (read once,
        then kept: the sample is fixed, and a flight line's tiles are slow to decompress)."""
        reader, net, dev = self.val_reader, self.net, self.device
        ids = torch.as_tensor(self.model.class_table.ids)
        truth, pred = [], []
        for start in range(0, len(reader), self.opts.batch):
            members = list(range(start, min(start + self.opts.batch, len(reader))))
            groups: dict[tuple[int, int], list[int]] = {}
            for i in members:
                groups.setdefault(tuple(reader[i].valid.shape), []).append(i)
            for group in groups.values():
                chips = [reader[i] for i in group]
                origins = [(reader.chips[i].tile.row, reader.chips[i].tile.col) for i in group]
                # The cached chips are scaled already; the network meets them where it meets
                # every window (inference.apply_scaled).
                best = apply_scaled(net, InputScaling.of(self.model),
                                    torch.stack([c.x for c in chips]),
                                    torch.stack([c.valid for c in chips]), origins,
                                    dev).logits.argmax(1).cpu()
                for c, b in zip(chips, best, strict=True):
                    truth.append(ids[c.target[c.train]])
                    pred.append(ids[b[c.train]])
        return classification_metrics(torch.cat(truth).numpy(), torch.cat(pred).numpy(),
                                      self.model.class_table.ids)

    def validate(self, step: int) -> None:
        """Score the validation sample; keep the state with the best OA (ties: lower loss)."""
        self.net.eval()
        m = self.score_validation()
        self.net.train()
        # Steps allocate tensors of changing sizes (sequence lengths follow the abundances) on
        # several threads' heaps, which fragment: RSS crept up by 1.4 GB over 300 steps on a
        # flight line until the free pages were handed back.
        release_memory()
        key = (m.overall_accuracy, -self.history[-1]["loss"] if self.history else 0.0)
        if key > self.best_key:
            self.best_key, self.best_step, self.best_val = key, step, m
            self.best_state = copy.deepcopy(self.net.state_dict())
        self.history[-1]["val_oa"] = m.overall_accuracy

    def run(self) -> bool:
        """All steps, validating every ``val_every``; True when interrupted (Ctrl-C)."""
        o = self.opts
        bar = tqdm(total=o.steps, desc="train", unit="step", disable=not o.progress,
                   dynamic_ncols=True)
        step = 0
        try:
            for step in range(1, o.steps + 1):
                t0 = time.perf_counter()
                sums = self.step(step)
                self.history.append({"step": step, **sums,
                                     "lr": self.optim.param_groups[0]["lr"],
                                     "seconds": time.perf_counter() - t0, "val_oa": ""})
                if step % o.val_every == 0 or step == o.steps:
                    self.validate(step)
                bar.set_postfix(loss=f"{sums['loss']:.3f}", ce=f"{sums['ce']:.3f}",
                                sad=f"{sums['sad']:.3f}",
                                val_oa=f"{self.best_key[0]:.3f}" if self.best_val else "-")
                bar.update(1)
        except KeyboardInterrupt:
            bar.write("interrupted: keeping the best model so far")
            if self.history and self.best_state is None:
                self.validate(step)
            return True
        finally:
            bar.close()
        return False


def train(scene: xr.DataArray | Sequence[xr.DataArray],
          labels: np.ndarray | Sequence[np.ndarray], class_table: ClassTable,
          out_dir: str | Path, opts: TrainOptions | None = None, *,
          overwrite: bool = False,
          split: np.ndarray | Sequence[np.ndarray] | None = None) -> TrainResult:
    """Train a model and write its folder (weights, card, history, split rasters) to ``out_dir``.

    ``scene`` and ``labels`` may be lists, one label array per scene on its grid (several
    flight lines, one model): one split and one scaling over all scenes; the split is written
    per scene (``split_<stem>.tif``) and the card lists the scenes.

    Everything that can be checked is checked before the first step: the options, the
    labels, and that ``out_dir`` can be written and holds no model (unless ``overwrite``).
    torch's global random state and thread count are as they were when it returns.

    ``split``: a fixed split (:class:`~hsimap.classes.Split` codes per pixel, one array per
    scene) instead of one drawn by ``opts`` (an active-learning round, an agreed protocol).
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
    if split is not None:
        splits_in = list(split) if many else [split]
        for sc, sp in zip(scenes, splits_in, strict=True):
            if np.shape(sp) != sc.labels.shape:
                raise HsimapError(f"the split is {np.shape(sp)}, the labels {sc.labels.shape}")
            sc.split = np.asarray(sp)
    # GDAL's default block cache (5% of RAM) would keep what the scans of the scenes read:
    # memory would grow with the scene, not with the batch and the chip cache.
    with thread_budget(opts.threads) as threads, seeded(opts.seed), bounded_write_cache():
        return _train(scenes, class_table, out_dir, opts, overwrite, threads)


def _train(scenes: list[TrainScene], class_table: ClassTable, out_dir: str | Path,
           opts: TrainOptions, overwrite: bool, threads: int) -> TrainResult:
    t_start = time.perf_counter()
    setup = _setup(scenes, class_table, opts)
    grids = [sc.grid for sc in scenes]
    splits = [sc.split for sc in scenes]
    labels = [sc.labels for sc in scenes]
    chips = label_chips(splits, grids, Split.TRAIN)
    if not chips:
        raise HsimapError("no training pixels fall on valid scene pixels")
    val_chips = sample_tiles(label_chips(splits, grids, Split.VALIDATION), labels,
                             max_tiles=opts.val_windows, max_pixels=None, seed=opts.seed)
    if opts.classifier in KINDS:
        return _train_baseline(setup, chips, val_chips, out_dir, opts, overwrite, threads,
                               t_start)
    net = UnmixingGuidedMamba(setup.cfg)
    model = TrainedModel(net, setup.card)
    lo, hi = model.scale
    _init_endmembers(net, (setup.sample - np.float32(lo)) / np.float32(max(hi - lo, 1e-12)),
                     opts.seed)
    net.to(torch.device(opts.device))
    reader = ChipReader(model, scenes, chips, opts.cache_mb * 2 ** 20)
    # A quarter more for the validation sample, which is scored every val_every steps.
    val_reader = ChipReader(model, scenes, val_chips, opts.cache_mb * 2 ** 20 // 4)
    fit = _Fit(model, setup, reader, val_reader, opts)
    # Steps read chips scattered over the scenes: GDAL's cache need hold one chip's tiles only,
    # and what the scans left in it goes back to the system.
    with bounded_write_cache(SCATTERED_CACHE_BYTES):
        release_memory()
        stopped = fit.run()
    if fit.best_state is None:
        raise HsimapError("training stopped before the first step finished; nothing saved")
    if stopped and (Path(out_dir) / CARD).exists():
        # A complete model is worth more than one of a few steps: --overwrite was asked of a
        # run that finishes, and Ctrl-C takes that back.
        raise Interrupted(f"interrupted at step {len(fit.history)} of {opts.steps}: the "
                          f"previous model in {out_dir} was kept, nothing of this run saved")
    net.load_state_dict(fit.best_state)
    net.eval()
    reader.clear()
    val_reader.clear()
    fit.ema = None
    release_memory()  # the test pass's worker threads allocate elsewhere than the caches did
    card = setup.card
    val_metrics, oas = fit.best_val, {"mamba": fit.best_val.overall_accuracy}
    arrays = None
    if opts.classifier == "auto":
        val_metrics, arrays, oas = _auto(model, scenes, chips, val_chips, val_metrics, opts,
                                         threads)
    test, n_test = _test(model, scenes, opts, threads)
    seconds = time.perf_counter() - t_start
    per_step = float(np.mean([h["seconds"] for h in fit.history]))
    card.model_hash = model_hash(net, arrays)
    card.endmember_names = endmember_names(*model.endmember_spectra(), opts.name_library)
    card.training = {"steps_run": len(fit.history), "best_step": fit.best_step,
                     "stopped_early": stopped, "seconds": round(seconds, 2),
                     "seconds_per_step": round(per_step, 4), "chips": len(chips),
                     "chip_reads": reader.reads, "validation_pixels":
                     int(sum(c.pixels for c in val_chips)), "test_pixels": n_test,
                     "test_pixels_labelled": _test_pixels(scenes),
                     "validation_reads": val_reader.reads,
                     "test_sample": None if opts.test_all else
                     {"max_windows": opts.test_windows, "max_pixels": opts.test_pixels}}
    card.validation_metrics = val_metrics.to_dict()
    card.test_metrics = test.to_dict() if test is not None else None
    net.to("cpu")
    save_model(out_dir, net, card, history=fit.history, splits=_split_rasters(scenes),
               overwrite=overwrite, classifier=arrays)
    return TrainResult(model, fit.best_step, val_metrics, test, seconds, per_step, stopped,
                       n_test, oas)


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


def _validation_metrics(model: TrainedModel, clf: PixelClassifier, val) -> Metrics:
    ids = np.asarray(model.class_table.ids)
    return classification_metrics(ids[val.y], ids[clf.predict(val.x)[0]],
                                  list(model.class_table.ids))


def _auto(model: TrainedModel, scenes: list[TrainScene], chips: list[Chip],
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


def _train_baseline(setup: _Setup, chips: list[Chip], val_chips: list[Chip],
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
    test, n_test = _test(model, scenes, opts, threads)
    seconds = time.perf_counter() - t_start
    card.model_hash = model_hash(None, f.arrays)
    card.training = {"seconds": round(seconds, 2), "train_pixels": int(len(train_px.y)),
                     "validation_pixels": int(len(val_px.y)), "test_pixels": n_test,
                     "test_pixels_labelled": _test_pixels(scenes),
                     "test_sample": None if opts.test_all else
                     {"max_windows": opts.test_windows, "max_pixels": opts.test_pixels}}
    card.validation_metrics = val_metrics.to_dict()
    card.test_metrics = test.to_dict() if test is not None else None
    save_model(out_dir, None, card, splits=_split_rasters(scenes), overwrite=overwrite,
               classifier=f.arrays)
    return TrainResult(model, 0, val_metrics, test, seconds, 0.0, False, n_test,
                       {kind: f.validation_oa})


def pair_labels(scenes: Sequence[str | Path], labels: Sequence[str | Path],
                what: str = "label file") -> list[str | Path]:
    """One label file per scene: ``labels`` as given, or its one vector file for every scene.
    ``what`` names a label file in the message (the CLI says ``-l``)."""
    from hsimap.io.labels import VECTOR_SUFFIXES

    labels = list(labels)
    if len(labels) == 1 and len(scenes) > 1:
        if Path(labels[0]).suffix.lower() not in VECTOR_SUFFIXES:
            raise HsimapError(f"{len(scenes)} scenes and one {what} {labels[0]}: give one "
                              f"{what} per scene, or one vector file covering all of them")
        return labels * len(scenes)
    if len(labels) != len(scenes):
        raise HsimapError(f"{len(scenes)} scene(s) but {len(labels)} {what}: give one per "
                          "scene, in order, or one vector file for all")
    return labels


def train_from_files(scenes: Sequence[str | Path], labels: Sequence[str | Path],
                     out_dir: str | Path, opts: TrainOptions | None = None, *,
                     class_field: str | None = None, classes_csv: str | Path | None = None,
                     variable: str | None = None, label_variable: str | None = None,
                     overwrite: bool = False) -> TrainResult:
    """:func:`train` from files, as ``hsimap train`` takes them: one label file per scene,
    in order, or one vector file whose polygons each scene takes where they fall on it.
    Classes are combined by name over the scenes.

    The options and the model folder are checked before any scene is read."""
    from hsimap.io.labels import combine_labels, load_labels
    from hsimap.io.scene import open_scene

    opts = opts or TrainOptions()
    opts.check()
    check_model_folder(out_dir, overwrite)
    labels = pair_labels(scenes, labels)
    data = [open_scene(s, variable=variable) for s in scenes]
    loaded = []
    for lab, d, name in zip(labels, data, scenes, strict=True):
        try:
            loaded.append(load_labels(lab, d, class_field=class_field, variable=label_variable,
                                      classes_csv=classes_csv, partial=len(scenes) > 1))
        except HsimapError as exc:
            raise HsimapError(f"{exc} ({name})" if len(scenes) > 1 else str(exc)) from None
    if len(scenes) == 1:
        return train(data[0], loaded[0][0], loaded[0][1], out_dir, opts, overwrite=overwrite)
    table, lab = combine_labels([t for _, t in loaded], [a for a, _ in loaded])
    return train(data, lab, table, out_dir, opts, overwrite=overwrite)
