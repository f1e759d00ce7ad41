"""The point layers hsimap writes for a person to label (``sample``, ``suggest``): one writer,
so that each is a GeoPackage 1.2 (QGIS 3.22 warns on every open of a 1.4 file), written
atomically, with the empty ``reference`` field the analyst fills in, and a default QGIS style
that labels each point with its id and, once filled in, its reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from hsimap.io.files import atomic_output
from hsimap.io.qml import points_qml

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
        store_default_style(tmp, out.stem, points_qml(next(iter(fields))))
    return out


def store_default_style(gpkg: str | Path, layer: str, qml: str, name: str = "hsimap") -> None:
    """Put ``qml`` in the GeoPackage as ``layer``'s default style: QGIS reads the
    ``layer_styles`` table (its own schema, registered as an attributes table) and applies the
    style marked ``useAsDefault`` when it opens the layer; GDAL lists the table after the
    layer, so readers that take the first layer still get the data."""
    import sqlite3

    with sqlite3.connect(str(gpkg)) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)")
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                   "VALUES ('layer_styles', 'attributes', 'layer_styles')")
        geom = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                          (layer,)).fetchone()
        db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        db.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                   "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, "
                   "description, owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, "
                   "'', '', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                   (layer, geom[0] if geom else "geom", name, qml,
                    "written by hsimap"))


STYLE_TABLE = "layer_styles"


def data_layer(path: str | Path) -> str | int:
    """The layer of a vector file that holds the features: its first layer with geometry (a
    GeoPackage's ``layer_styles`` table, QGIS's or hsimap's, is not one), else the first."""
    import pyogrio

    try:
        layers = pyogrio.list_layers(path)
    except Exception:
        return 0   # let the reader say what is wrong with the file
    for name, geometry in layers:
        if geometry is not None and name != STYLE_TABLE:
            return str(name)
    return 0
