"""Training chips: the prediction tiles whose core holds labelled pixels, read from the scenes
through a cache of bounded size (:class:`ChipReader`), and scored as prediction scores windows
(:func:`score_chips`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from hsimap.engine import map_tiles
from hsimap.inference import batch_products, model_input
from hsimap.io.gdal import SCATTERED_CACHE_BYTES, bounded_write_cache
from hsimap.io.scene import read_window
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.store import (
    TrainedModel,
)
from hsimap.sampling import Chip
from hsimap.workflows.train_setup import TrainScene


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
