"""The progress bar of a run over a scene: pixels done, advanced as tiles finish."""

from __future__ import annotations

import threading
from typing import Protocol

import xarray as xr
from tqdm import tqdm


class _Sized(Protocol):
    pixels: int


class TileProgress:
    """A progress bar in pixels, advanced as tiles finish (from any worker thread)."""

    def __init__(self, scene: xr.DataArray, desc: str, enabled: bool = True):
        self.total = scene.sizes["x"] * scene.sizes["y"]
        self.tiles = 0
        self._lock = threading.Lock()
        self._bar = tqdm(total=self.total, unit="px", unit_scale=True, desc=desc,
                         disable=not enabled, dynamic_ncols=True, smoothing=0.1)

    def on_tile(self, tile: _Sized) -> None:
        with self._lock:
            self._bar.update(tile.pixels)
            self.tiles += 1

    def close(self, failed: bool = False) -> None:
        if failed:
            self._bar.leave = False  # clear the bar so the error message stands on its own
        self._bar.close()
