"""The class-probabilities raster (``predict --probabilities``): how it is encoded, how it is
recognised, and how it is read back. One band per class in the class table's order; float32
with NaN nodata, or uint8 0-254 with a scale factor of 1/254 and 255 nodata (a quarter of the
size, rounding error at most 0.002). The dataset tags name the encoding and the class ids of
the bands, so that a reader never has to guess them from the band count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio

from hsimap.errors import HsimapError

TAG_ENCODING = "HSIMAP_PROBABILITIES"   # "float32" or "uint8"
TAG_CLASS_IDS = "HSIMAP_CLASS_IDS"      # the bands' class ids, comma-separated, in band order
ENCODINGS = ("float32", "uint8")
UINT8_SCALE = 1 / 254
UINT8_NODATA = 255
UNIT = "probability"


def tags(encoding: str, class_ids: list[int]) -> dict[str, str]:
    """The dataset tags of a probabilities raster."""
    if encoding not in ENCODINGS:
        raise HsimapError(f"probabilities are stored as {' or '.join(ENCODINGS)}, "
                          f"not {encoding!r}")
    return {TAG_ENCODING: encoding, TAG_CLASS_IDS: ",".join(map(str, class_ids))}


def encode(prob, encoding: str):
    """Probabilities (float, NaN where no pixel; numpy or dask) as stored."""
    if encoding == "float32":
        return prob
    import dask.array as da

    lib = da if isinstance(prob, da.Array) else np
    return lib.where(lib.isnan(prob), UINT8_NODATA, lib.round(prob / UINT8_SCALE))


def is_probabilities_dataset(src) -> bool:
    """Whether an open dataset is a probabilities raster hsimap wrote (its tag, or every band
    in the unit 'probability' with more than one band)."""
    return TAG_ENCODING in src.tags() or (src.count > 1 and all(u == UNIT for u in src.units))


def is_probabilities(path: str | Path) -> bool:
    """:func:`is_probabilities_dataset` of the file at ``path`` (False if unreadable)."""
    try:
        with rasterio.open(path) as src:
            return is_probabilities_dataset(src)
    except rasterio.errors.RasterioIOError:
        return False


def probability_classes(path: str | Path) -> tuple[list[int], list[str]]:
    """The bands' class ids and names."""
    with rasterio.open(path) as src:
        tagged = src.tags().get(TAG_CLASS_IDS)
        names = [d or f"class {i + 1}" for i, d in enumerate(src.descriptions)]
    ids = list(range(1, len(names) + 1))
    if tagged:
        try:
            ids = [int(v) for v in tagged.split(",")]
        except ValueError:
            raise HsimapError(f"{path}: damaged {TAG_CLASS_IDS} tag {tagged!r}") from None
        if len(ids) != len(names):
            raise HsimapError(f"{path}: {TAG_CLASS_IDS} names {len(ids)} classes for "
                              f"{len(names)} bands")
    return ids, names


def read_probabilities(path: str | Path, window: tuple[slice, slice] | None = None
                       ) -> np.ndarray:
    """(C, h, w) float32 probabilities, NaN where no pixel, decoded as written."""
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        w = None
        if window is not None:
            rs, cs = window
            w = Window(cs.start, rs.start, cs.stop - cs.start, rs.stop - rs.start)
        raw = src.read(window=w)
        scale = src.scales[0] if src.dtypes[0] == "uint8" else 1.0
        nodata = src.nodata
    prob = raw.astype(np.float32) * np.float32(scale)
    if nodata is not None and not math.isnan(nodata):
        prob[raw == nodata] = np.nan
    return prob
