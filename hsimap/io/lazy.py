"""A product's cube as an array dask slices: the readers of products that are not one GDAL
raster (EMIT's swath through its GLT, PRISMA's two detectors) read a window when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np


@dataclass
class LazyCube:
    """(bands, rows, cols) float32, read window by window by :meth:`read`; dask passes
    slices (or integers, taken as one-long slices)."""

    path: Path
    shape: tuple[int, int, int]
    dtype: ClassVar[np.dtype] = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key) -> np.ndarray:
        return self.read(*(k if isinstance(k, slice) else slice(k, k + 1) for k in key))

    def read(self, bands: slice, rows: slice, cols: slice) -> np.ndarray:
        raise NotImplementedError
