"""Which tiles a training run reads: chips holding its training pixels, and bounded samples of
the validation and test pixels.

Training reads the scene's own prediction tiles (:func:`hsimap.windows.tiles`), so a labelled
pixel is trained in the window, with the context, the coordinate code and the token budgets that
prediction gives it. What a run costs is set by how many tiles it reads, not by the scene:

- :func:`label_chips` lists the tiles whose core holds a training pixel (at most one per
  training pixel, however far the labels spread);
- :func:`sample_tiles` picks a bounded, class-stratified set of tiles and pixels to score
  (validation during training, the final test pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsimap.windows import Tile


@dataclass(frozen=True)
class Chip:
    """A tile of one scene of a run, and the pixels of its core that a step or a score uses."""

    scene: int           # index of the scene in the run
    tile: Tile
    mask: np.ndarray     # bool (core_height, core_width)

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


def label_chips(splits: list[np.ndarray], grids: list[list[Tile]], code: int) -> list[Chip]:
    """Every tile whose core holds pixels of split ``code``, with those pixels as its mask."""
    out = []
    for s, (split, grid) in enumerate(zip(splits, grids, strict=True)):
        for t in grid:
            mask = split[t.core_rows, t.core_cols] == code
            if mask.any():
                out.append(Chip(s, t, mask))
    return out


def sample_tiles(chips: list[Chip], labels: list[np.ndarray], *, max_tiles: int | None,
                 max_pixels: int | None, seed: int) -> list[Chip]:
    """A bounded sample of ``chips`` (tiles and pixels), stratified by class.

    Tiles are taken in a seeded random order, one class at a time in turn, so that rare classes
    are not crowded out by common ones; then, if the chosen tiles hold more than ``max_pixels``
    pixels, each class keeps up to ``max_pixels // classes`` of them, and what is left of the
    budget goes to the classes in proportion to what they have beyond that. ``None``: no
    bound.
    """
    rng = np.random.default_rng(seed)
    classes = [labels[c.scene][c.tile.core_rows, c.tile.core_cols][c.mask] for c in chips]
    chosen = list(range(len(chips)))
    if max_tiles is not None and len(chips) > max_tiles:
        queues: dict[int, list[int]] = {}
        for i in rng.permutation(len(chips)):
            for k in np.unique(classes[i]):
                queues.setdefault(int(k), []).append(int(i))
        picked: set[int] = set()
        order: list[int] = []
        while len(order) < max_tiles and any(queues.values()):
            for k in sorted(queues):
                q = queues[k]
                while q and q[0] in picked:
                    q.pop(0)
                if q and len(order) < max_tiles:
                    picked.add(q[0])
                    order.append(q.pop(0))
        chosen = sorted(order)
    sample = [chips[i] for i in chosen]
    total = sum(c.pixels for c in sample)
    if max_pixels is None or total <= max_pixels:
        return sample
    # Which pixels of the chosen tiles to keep: a per-class quota, drawn at random.
    owner = np.concatenate([np.full(c.pixels, j) for j, c in enumerate(sample)])
    where = np.concatenate([np.flatnonzero(c.mask) for c in sample])
    cls = np.concatenate([classes[i] for i in chosen])
    ids, counts = np.unique(cls, return_counts=True)
    quota = np.minimum(counts, max_pixels // len(ids))
    spare, left = max_pixels - int(quota.sum()), counts - quota
    if spare > 0 and left.sum():
        quota += np.minimum(left, left * spare // int(left.sum()))
    keep = np.zeros(len(cls), bool)
    for k, q in zip(ids, quota, strict=True):
        idx = np.flatnonzero(cls == k)
        keep[rng.choice(idx, int(q), replace=False)] = True
    out = []
    for j, c in enumerate(sample):
        sel = keep & (owner == j)
        if sel.any():
            mask = np.zeros(c.mask.size, bool)
            mask[where[sel]] = True
            out.append(Chip(c.scene, c.tile, mask.reshape(c.mask.shape)))
    return out
