"""Training labels on the scene grid: from a class raster, a vector file or a .mat, and the split.

Label 0 is unlabelled. Class ids are kept as the user gave them (e.g. SalinasA's 1, 10..14);
vector files with text classes get ids 1..K in sorted order of the names.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_geom

from hsimap.classes import ClassTable, Split, name_key
from hsimap.errors import HsimapError
from hsimap.io.classmaps import read_class_table
from hsimap.io.mat import load_mat
from hsimap.io.points import data_layer
from hsimap.io.rasters import Grid

MAX_CLASS_ID = 65535   # the largest id a paletted (UInt16) GeoTIFF class map can hold
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml")


def load_labels(path: str | Path, scene: xr.DataArray, *, class_field: str | None = None,
                variable: str | None = None, classes_csv: str | Path | None = None,
                partial: bool = False) -> tuple[np.ndarray, ClassTable]:
    """Labels as an int32 (height, width) array on the scene grid, and the class table.

    The table lists the classes that have pixels on the grid. A class the file lists without
    pixels here is refused, unless ``partial`` (a reference sample, or one of several flight
    lines, need not hold every class).
    """
    path = Path(path)
    if not path.exists():
        raise HsimapError(f"{path}: no such label file")
    grid = Grid.from_scene(scene)
    suffix = path.suffix.lower()
    table: ClassTable | None = None
    if suffix == ".mat":
        labels = _mat_labels(path, grid, variable)
    elif suffix in VECTOR_SUFFIXES:
        labels, table = _vector_labels(path, grid, class_field)
    else:
        labels, table = _raster_labels(path, grid)
    ids = sorted(int(v) for v in np.unique(labels) if v != 0)
    if not ids:
        raise HsimapError(f"{path}: no labelled pixels (all 0) on the scene grid")
    if ids[0] < 0 or ids[-1] > MAX_CLASS_ID:
        bad = ids[0] if ids[0] < 0 else ids[-1]
        raise HsimapError(f"{path}: class id {bad} is outside 1-{MAX_CLASS_ID:,} (class maps are "
                          "paletted UInt16 GeoTIFFs); renumber the classes")
    if classes_csv is not None:
        labels, table = _apply_class_csv(labels, ids, table, classes_csv)
        ids = sorted(int(v) for v in np.unique(labels) if v != 0)
    if table is None:
        table = ClassTable.default(ids)
    # Keep only classes that have pixels; a class listed but absent cannot be learnt.
    keep = [i for i in table.ids if i in ids]
    absent = [table.name_of(i) for i in table.ids if i not in ids]
    if absent and not partial:
        raise HsimapError(f"class(es) {', '.join(absent)} have no labelled pixels in the "
                          "scene; remove them from the class list")
    table = ClassTable(keep, [table.name_of(i) for i in keep],
                       [table.colors[table.ids.index(i)] for i in keep])
    return labels.astype(np.int32), table


def _apply_class_csv(labels: np.ndarray, ids: list[int], table: ClassTable | None,
                     classes_csv: str | Path) -> tuple[np.ndarray, ClassTable]:
    """The CSV's ids, names and colours for the labels' classes.

    Labels whose classes have names (text classes of a vector file, a class map's names) are
    matched to the CSV by name, and take the CSV's ids; numbered labels by id. A class on one
    side and not on the other is refused, so that no class is silently renamed."""
    csv_table = ClassTable.from_csv(classes_csv)
    if table is not None and table.named:
        names = {i: table.name_of(i) for i in ids}
        theirs = {name_key(n) for n in names.values()}
        extra = sorted(n for n in csv_table.names if name_key(n) not in theirs)
        if extra:
            raise HsimapError(f"{classes_csv}: names {', '.join(map(repr, extra))}, which the "
                              "labels do not have; remove them")
        return csv_table.renumber_by_name(labels, names, str(classes_csv)), csv_table
    missing = [i for i in ids if i not in csv_table.ids]
    if missing:
        raise HsimapError(f"{classes_csv}: no entry for class ids {missing}")
    return labels, csv_table


def _mat_labels(path: Path, grid: Grid, variable: str | None) -> np.ndarray:
    data = load_mat(path)
    shape = (grid.height, grid.width)

    def factor(v: object) -> int | None:
        """k where ``v`` is an integer image k times finer than the scene (k = 1: same grid)."""
        if not (isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind in "iu"):
            return None
        k, rem = divmod(v.shape[0], shape[0])
        ok = k >= 1 and rem == 0 and v.shape[1] == k * shape[1]
        return k if ok else None

    if variable is not None:
        if variable not in data:
            raise HsimapError(f"{path}: no variable {variable!r}")
        v = np.asarray(data[variable])
        k = factor(v)
        if k is None:
            raise HsimapError(f"{path}: {variable!r} is {v.shape}, not an integer image of "
                              f"the scene's size {shape} or a whole multiple of it")
        return block_majority(v, k, path.name)
    cands = {name: factor(v) for name, v in data.items()}
    cands = {name: k for name, k in cands.items() if k is not None}
    if not cands:
        raise HsimapError(f"{path}: no integer label image of the scene's size {shape} (or a "
                          "whole multiple of it); name it with --label-variable")
    # The scene's own grid first, then the finest; among equals the largest variable.
    name = min(cands, key=lambda n: (cands[n] != 1, -cands[n]))
    return block_majority(np.asarray(data[name]), cands[name], path.name)


def block_majority(labels: np.ndarray, k: int, what: str) -> np.ndarray:
    """Labels k times finer than the scene (row and column), aligned with it: each scene pixel
    takes the majority of its k x k block (:func:`majority`)."""
    if k == 1:
        return labels
    warnings.warn(f"{what}: labels on a {k}x finer grid; each scene pixel takes the class of "
                  f"more than half of its {k} x {k} label pixels (majority; else unlabelled)",
                  stacklevel=3)
    rows, cols = np.indices(labels.shape)
    return majority(labels, rows // k, cols // k, (labels.shape[0] // k, labels.shape[1] // k))


def majority(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray,
             shape: tuple[int, int]) -> np.ndarray:
    """Finer labels onto the scene grid: each scene pixel (``rows``, ``cols`` give the one
    each label pixel falls in; outside the grid is dropped) takes the class held by more than
    half of its label pixels (unlabelled ones counted), else it stays unlabelled (0): a mixed
    pixel is no clean training or reference pixel.

    The one rule for labels on a finer grid (rasters and .mat arrays alike): the Houston 2018
    protocol takes its 0.5 m ground truth to the 1 m grid this way (at least 9 of a 4 x 4
    block), where one sub-pixel (nearest neighbour) would let a boundary's corner decide."""
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    pixel = (rows[inside] * shape[1] + cols[inside]).astype(np.int64)
    values, inverse = np.unique(labels[inside], return_inverse=True)
    counts = np.bincount(pixel * len(values) + inverse.ravel(),
                         minlength=shape[0] * shape[1] * len(values))
    counts = counts.reshape(shape[0] * shape[1], len(values))
    best = counts.argmax(axis=1)
    held = counts[np.arange(len(counts)), best]
    out = np.where(2 * held > counts.sum(axis=1), values[best], 0)
    return out.reshape(shape).astype(labels.dtype)


def _raster_labels(path: Path, grid: Grid) -> tuple[np.ndarray, ClassTable | None]:
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise HsimapError(f"{path}: not a readable label raster or vector file") from None
    with src:
        same = Grid.of(src).same_as(grid)
        table = read_class_table(path)
        values = _class_values(src.read(1), src.nodata, path)
        if table is None:
            try:
                cmap = src.colormap(1)
            except ValueError:
                cmap = None
            if cmap:
                vals = sorted(int(v) for v in np.unique(values) if v != 0)
                table = ClassTable(vals, [f"class {v}" for v in vals],
                                   [tuple(cmap.get(v, (0, 0, 0))[:3]) for v in vals])
        if same:
            return values, table
        if src.crs is not None and grid.crs is not None and src.crs != grid.crs:
            raise HsimapError(f"{path}: label raster CRS differs from the scene's; "
                              "reproject it first (or give polygons, which hsimap reprojects)")
        # Finer labels: the majority of the label pixels whose centres fall in each scene
        # pixel; coarser or equal: the label pixel under the scene pixel's centre.
        area = abs(src.transform.a * src.transform.e - src.transform.b * src.transform.d)
        scene_area = abs(grid.transform.a * grid.transform.e -
                         grid.transform.b * grid.transform.d)
        finer = area < scene_area * (1 - 1e-9)
        how = ("majority (over half) of the label pixels in each scene pixel" if finer
               else "nearest neighbour")
        warnings.warn(f"{path.name}: label grid differs from the scene grid; resampled by "
                      f"{how}", stacklevel=2)
        if finer:
            r, c = np.indices(values.shape)
            x, y = src.transform * (c + 0.5, r + 0.5)
            col, row = ~grid.transform * (x, y)
            out = majority(values, np.floor(row).astype(np.int64),
                           np.floor(col).astype(np.int64), (grid.height, grid.width))
        else:
            out = np.zeros((grid.height, grid.width), dtype=np.int32)
            reproject(values, out, src_transform=src.transform, src_crs=src.crs or grid.crs,
                      dst_transform=grid.transform, dst_crs=grid.crs or src.crs,
                      resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        if not out.any():
            raise HsimapError(f"{path}: labels do not overlap the scene")
        return out, table


def _class_values(raw: np.ndarray, nodata: float | None, path: Path) -> np.ndarray:
    """A label band as int32 class ids: the declared nodata (and NaN) become 0, unlabelled;
    values that are not whole numbers are refused rather than truncated into other classes."""
    bad = np.zeros(raw.shape, bool)
    if nodata is not None:
        bad |= np.isnan(raw) if np.isnan(nodata) else raw == nodata
    if raw.dtype.kind == "f":
        bad |= ~np.isfinite(raw)
        frac = ~bad & (np.mod(raw, 1) != 0)
        if frac.any():
            v = raw[frac][0]
            raise HsimapError(f"{path}: class values must be whole numbers, but it holds "
                              f"{v:g} ({int(frac.sum()):,} px); is it a class map?")
    out = np.where(bad, 0, raw)
    return out.astype(np.int64).astype(np.int32) if raw.dtype.kind == "f" else \
        out.astype(np.int32)


def _vector_labels(path: Path, grid: Grid, class_field: str | None
                   ) -> tuple[np.ndarray, ClassTable]:
    import pyogrio
    import shapely

    if not grid.has_transform:
        how = "ground control points only" if grid.gcps else "no georeferencing"
        raise HsimapError(f"{path}: the scene has {how}, so polygons cannot be placed on its "
                          "pixels; give the labels as a raster on the scene's grid")
    try:
        layer = data_layer(path)
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:
        raise HsimapError(f"{path}: not a readable vector file ({exc})") from None
    fields = list(info["fields"])
    if class_field is None:
        # "reference": the field of the point layers `sample` and `suggest` write
        guess = [f for f in fields if f.lower() in ("class", "label", "classid", "class_id",
                                                    "reference")]
        if not guess:
            raise HsimapError(f"{path}: say which attribute holds the class with --class-field "
                              f"(fields: {', '.join(fields)})")
        class_field = guess[0]
    if class_field not in fields:
        raise HsimapError(f"{path}: no field {class_field!r}; use --class-field with one of: "
                          f"{', '.join(fields)}")
    meta, _, geometry, field_data = pyogrio.raw.read(path, layer=layer, columns=[class_field])
    values = field_data[0]
    src_crs = meta.get("crs")
    geoms = shapely.from_wkb(geometry)
    # An empty geometry (POINT EMPTY, common after an edit in QGIS) is skipped as a null one.
    geoms = np.array([None if g is None or g.is_empty else g for g in geoms], dtype=object)
    empty = _empty_values(values)
    numbers = _as_class_numbers(values, empty)
    if numbers is not None:
        ids = numbers
        uniq = sorted(set(int(i) for i in ids if i > 0))
        table = ClassTable(uniq, [f"class {i}" for i in uniq])
    else:
        names = sorted(set(str(v) for v, e in zip(values, empty, strict=True) if not e))
        lut = {n: i + 1 for i, n in enumerate(names)}
        ids = np.array([0 if e else lut[str(v)] for v, e in zip(values, empty, strict=True)],
                       dtype=np.int64)
        table = ClassTable(list(lut.values()), names)
    if empty.any():
        warnings.warn(f"{path.name}: {int(empty.sum()):,} of {len(values):,} features have no "
                      f"value in {class_field!r}; left out", stacklevel=3)
    present = [g for g in geoms if g is not None]
    if present and (not src_crs or _is_wgs84(src_crs)):
        x0, y0, x1, y1 = shapely.total_bounds(np.array(present, dtype=object))
        if max(abs(x0), abs(x1)) > 180 or max(abs(y0), abs(y1)) > 90:
            said = ("the file names no CRS" if not src_crs and path.suffix.lower() != ".geojson"
                    else "the file's CRS is WGS84 (as a GeoJSON naming none is)" if not src_crs
                    else "the file's CRS is WGS84")
            raise HsimapError(
                f"{path}: coordinates reach ({x1:.6g}, {y1:.6g}), which are not longitude and "
                f"latitude, but {said}; give it its real CRS (e.g. ogr2ogr -a_srs EPSG:32611 "
                f"out.gpkg {path.name})")
    shapes = []
    for g, i in zip(geoms, ids, strict=True):
        if g is None or i <= 0:
            continue
        gj = shapely.geometry.mapping(g)
        if src_crs and grid.crs is not None:
            try:
                gj = transform_geom(src_crs, grid.crs, gj)
            except Exception as exc:  # PROJ errors come as several GDAL exception types
                raise HsimapError(f"{path}: cannot reproject its geometries from {src_crs} to "
                                  f"the scene's CRS ({exc})") from None
        shapes.append((gj, int(i)))
    if not shapes:
        raise HsimapError(f"{path}: no geometries with a class")
    labels = rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform,
                       fill=0, dtype="int32")
    if not labels.any():
        raise HsimapError(f"{path}: labels do not overlap the scene (check their CRS and extent)")
    return labels, table


def _empty_values(values: np.ndarray) -> np.ndarray:
    """Features whose class field holds nothing: NULL, NaN or blank text."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "iu":
        return np.zeros(len(values), bool)
    return np.array([v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""
                     for v in values], dtype=bool)


def _as_class_numbers(values: np.ndarray, empty: np.ndarray) -> np.ndarray | None:
    """Class ids where the field holds whole numbers (as numbers, or as text of digits: a
    reference typed into a text field in QGIS is still the id "2", not the second name in
    sort order); None where it holds names."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        ok = values[~empty]
        if np.all(np.mod(ok, 1) == 0):
            return np.where(empty, 0, values).astype(np.int64)
        return None
    text = [str(v).strip() for v, e in zip(values, empty, strict=True) if not e]
    if text and all(t.lstrip("-").isdigit() for t in text):
        return np.array([0 if e else int(str(v).strip())
                         for v, e in zip(values, empty, strict=True)], dtype=np.int64)
    return None


def split_labels(labels: np.ndarray, class_ids: list[int], *, train_per_class: int = 30,
                 val_per_class: int = 10, train_fraction: float | None = None,
                 seed: int = 0) -> np.ndarray:
    """The paper's protocol: per class, random training and validation pixels, rest test.

    Per class with n labelled pixels: ``train_per_class`` training pixels (with
    ``train_fraction``: round(fraction * n), at least 1); a class with ``train_per_class`` or
    fewer pixels gets 5 (the paper's rule for small classes; at most half of n). Validation:
    ``val_per_class``, at most half of what is left. All the remaining pixels are test.

    Returns:
        uint8 (height, width): 0 unlabelled, else a :class:`~hsimap.classes.Split` code.
    """
    rng = np.random.default_rng(seed)
    split = np.zeros(labels.shape, dtype=np.uint8)
    flat = labels.ravel()
    out = split.ravel()
    for c in class_ids:
        idx = np.flatnonzero(flat == c)
        n = len(idx)
        if n == 0:
            raise HsimapError(f"class {c} has no labelled pixels")
        if train_fraction is not None:
            n_train = max(1, int(round(train_fraction * n)))
        elif n <= train_per_class:
            n_train = max(1, min(5, n // 2))
        else:
            n_train = train_per_class
        n_val = min(val_per_class, (n - n_train) // 2)
        perm = rng.permutation(idx)
        out[perm[:n_train]] = Split.TRAIN
        out[perm[n_train:n_train + n_val]] = Split.VALIDATION
        out[perm[n_train + n_val:]] = Split.TEST
    return split


def _is_wgs84(crs: str) -> bool:
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(crs).to_epsg() in (4326, 4979)
    except Exception:
        return False


def combine_labels(tables: list[ClassTable], labels: list[np.ndarray]
                   ) -> tuple[ClassTable, list[np.ndarray]]:
    """One class table for several scenes' labels, each renumbered into it.

    Named classes (vector attributes, category names, a --classes CSV) are matched by name,
    because each vector file numbers its own values: "maize" may be 1 in one line's file and
    3 in another's. Classes known only by number are matched by number.
    """
    named = [t.named for t in tables]
    if all(named):
        by_name: dict[str, int] = {}
        ids, names, colors = [], [], []
        for t in tables:
            for i, n, c in zip(t.ids, t.names, t.colors, strict=True):
                if name_key(n) in by_name:
                    continue
                new = i if i not in ids else max(ids) + 1
                by_name[name_key(n)] = new
                ids.append(new)
                names.append(n)
                colors.append(c)
        out = []
        for t, lab in zip(tables, labels, strict=True):
            lut = np.zeros(max(t.ids) + 1, dtype=np.int32)
            for i, n in zip(t.ids, t.names, strict=True):
                lut[i] = by_name[n.casefold()]
            out.append(np.where(lab > 0, lut[np.clip(lab, 0, len(lut) - 1)], 0))
        order = np.argsort(ids)
        table = ClassTable([ids[k] for k in order], [names[k] for k in order],
                           [colors[k] for k in order])
        return table, out
    if any(named):
        raise HsimapError("some scenes' labels name their classes and others only number "
                          "them; give --classes with a CSV of id,name for all")
    ids = sorted({i for t in tables for i in t.ids})
    return ClassTable.default(ids), list(labels)
