"""The area of each class of a class map, as land-cover producers report it: pixels, and
hectares from the map's CRS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from hsimap.io.grid import Grid


@dataclass
class MappedArea:
    """Pixels of each class in a class map, and their area in hectares (None without a CRS)."""

    pixels: np.ndarray            # per class id, in the order asked for
    hectares: np.ndarray | None


def mapped_area(path, class_ids: list[int]) -> MappedArea:
    """Count each class's pixels in the class map at ``path``, block by block, and their area.

    Projected CRS: pixel area from the transform, in the CRS's linear unit. Geographic CRS:
    each row's pixel area on the CRS's ellipsoid (it shrinks towards the poles).
    """
    ids = np.asarray(class_ids)
    with rasterio.open(path) as src:
        top = max(int(ids.max()), 0) + 1
        counts = np.zeros(top, np.int64)
        per_row: np.ndarray | None = None
        row_area = Grid.of(src).pixel_area_m2()
        if row_area is not None:
            per_row = np.zeros(top, np.float64)
        step = 256
        for r0 in range(0, src.height, step):
            h = min(step, src.height - r0)
            block = src.read(1, window=Window(0, r0, src.width, h)).astype(np.int64)
            inside = (block >= 0) & (block < top)
            counts += np.bincount(block[inside], minlength=top)
            if per_row is not None:
                w = np.broadcast_to(row_area[r0:r0 + h, None], block.shape)[inside]
                per_row += np.bincount(block[inside], weights=w, minlength=top)
    hectares = per_row[ids] / 1e4 if per_row is not None else None
    return MappedArea(counts[ids], hectares)
