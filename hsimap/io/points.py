"""The point layers hsimap writes for a person to label (``sample``, ``suggest``): one writer,
so that each is a GeoPackage 1.2 (QGIS 3.22 warns on every open of a 1.4 file), written
atomically, with the empty ``reference`` field the analyst fills in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from hsimap.io.files import atomic_output

GPKG_OPTIONS = {"VERSION": "1.2"}
REFERENCE = "reference"   # the field a person fills with the class id seen on the ground


def write_points(path: str | Path, rows: np.ndarray, cols: np.ndarray, transform, crs,
                 fields: dict[str, np.ndarray], *, overwrite: bool,
                 metadata: dict[str, str] | None = None) -> Path:
    """Points at the centres of pixels (``rows``, ``cols``) of a grid, with ``fields`` (in
    order) and an empty (NULL) integer :data:`REFERENCE` field last."""
    import pyogrio
    import shapely

    out = Path(path)
    n = len(rows)
    xs, ys = rasterio.transform.xy(transform, rows, cols, offset="center")
    geoms = shapely.points(np.asarray(xs, float).reshape(n), np.asarray(ys, float).reshape(n))
    names = [*fields, REFERENCE]
    values = [*fields.values(), np.zeros(n, np.int32)]
    with atomic_output(out, overwrite) as tmp:
        pyogrio.raw.write(tmp, shapely.to_wkb(geoms), values, fields=names,
                          field_mask=[np.zeros(n, bool)] * len(fields) + [np.ones(n, bool)],
                          geometry_type="Point", crs=crs.to_wkt(), driver="GPKG",
                          layer=out.stem, layer_metadata=metadata or {},
                          dataset_options=GPKG_OPTIONS)
    return out
