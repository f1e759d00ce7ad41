"""A reference sample for the accuracy of a class map: ``hsimap sample``.

The design (:mod:`hsimap.design`) is stratified random with the map's classes as strata. The
points are written as a GeoPackage of pixel centres in the map's CRS with ``map_class``,
``map_class_name`` and an empty ``reference`` field to fill in (QGIS: toggle editing, open
the attribute table), and the design as layer metadata (``HSIMAP_SAMPLE_DESIGN``, JSON):
``evaluate --stratified`` reads it back and refuses the sample against a map whose strata
are not the design's.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from hsimap.classes import ClassTable, name_key
from hsimap.design import (
    Design,
    allocate,
    distance_in_pixels,
    draw,
    parse_distance,
    points_digest,
    sample_size,
)
from hsimap.errors import HsimapError
from hsimap.io.classmaps import open_class_map, read_class_table
from hsimap.io.files import refuse_inputs
from hsimap.io.points import data_layer, write_points

DESIGN_KEY = "HSIMAP_SAMPLE_DESIGN"


@dataclass
class SampleOptions:
    """How the sample is designed and drawn (the CLI's options, with their defaults)."""

    target_se: float = 0.01
    expected_ua: float | str | Path = 0.8   # one value, or a CSV of id (or name), expected_ua
    allocation: str = "olofsson"
    min_per_class: int = 50
    min_distance: str | float | None = None  # pixels ("3") or metres ("90m")
    seed: int = 0
    overwrite: bool = False


@dataclass
class SampleReport:
    path: Path
    design: Design
    names: list[str]


def _read_map(path: str | Path) -> tuple[np.ndarray, rasterio.Affine, object, ClassTable | None]:
    with open_class_map(path) as src:
        if src.crs is None or src.transform.is_identity:
            raise HsimapError(f"{path}: the map has no georeferencing, so sample points cannot "
                              "be placed in map coordinates")
        band = src.read(1)
        if src.nodata is not None and src.nodata != 0:
            band = np.where(band == src.nodata, 0, band)
        return band, src.transform, src.crs, read_class_table(path)


def _expected_ua(value: float | str | Path, ids: list[int], names: list[str]) -> np.ndarray:
    """One value for every class, or a CSV with ``id`` (or ``name``) and ``expected_ua``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = None
    if v is not None:
        return np.full(len(ids), v)
    path = Path(value)
    if not path.is_file():
        raise HsimapError(f"--expected-ua: {value} is neither a number nor a CSV file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "expected_ua" not in rows[0]:
        raise HsimapError(f"{path}: needs columns id (or name) and expected_ua")
    by_id, by_name = {}, {}
    for r in rows:
        try:
            ua = float(r["expected_ua"])
        except (TypeError, ValueError):
            raise HsimapError(f"{path}: expected_ua {r['expected_ua']!r} is not a number") from None
        if r.get("id"):
            by_id[int(r["id"])] = ua
        if r.get("name"):
            by_name[name_key(r["name"])] = ua
    out = []
    for i, n in zip(ids, names, strict=True):
        ua = by_id.get(i, by_name.get(name_key(n)))
        if ua is None:
            raise HsimapError(f"{path}: no expected_ua for class {i} ({n})")
        out.append(ua)
    return np.asarray(out)


def sample_map(classes: str | Path, output: str | Path, opts: SampleOptions | None = None
               ) -> SampleReport:
    """Design and draw a stratified random sample of the class map ``classes`` and write it
    to ``output`` (a GeoPackage)."""
    opts = opts or SampleOptions()
    out = Path(output)
    if out.suffix.lower() != ".gpkg":
        raise HsimapError(f"{out}: name the sample .gpkg (it carries its design as metadata)")
    refuse_inputs({"-o": out}, [classes])
    parse_distance(opts.min_distance)   # a distance that is none refused before the map is read
    band, transform, crs, table = _read_map(classes)
    ids = [int(v) for v in np.unique(band) if v != 0]
    if not ids:
        raise HsimapError(f"{classes}: no classified pixels to sample")
    names = [table.name_of(i) if table else f"class {i}" for i in ids]
    strata = np.array([(band == i).sum() for i in ids], np.int64)
    min_distance = distance_in_pixels(opts.min_distance, crs, transform)
    ua = _expected_ua(opts.expected_ua, ids, names)
    total = sample_size(strata, ua, opts.target_se)
    planned = allocate(strata, total, opts.allocation, opts.min_per_class)
    rows, cols = draw(band, ids, planned, min_distance=min_distance, seed=opts.seed)
    mapped = band[rows, cols].astype(np.int64)  # uint32 maps: ids up to 2^32 - 1
    drawn = [int((mapped == i).sum()) for i in ids]
    # evaluate --stratified needs two reference points in every mapped class: a design with
    # fewer is refused here, not after a person has labelled it.
    few = [(names[k], drawn[k], int(strata[k])) for k in range(len(ids)) if drawn[k] < 2]
    if few:
        name, got, pixels = few[0]
        why = (f"the map has {pixels} pixel(s) of it" if pixels < 2 else
               "no more fit --min-distance apart")
        raise HsimapError(f"{classes}: class {name!r} would get {got} point(s) ({why}); a "
                          "stratified estimate needs 2 or more in every class: sieve the map "
                          "(predict --mmu) or lower --min-distance")
    design = Design(ids, [int(s) for s in strata], [int(n) for n in planned], drawn,
                    opts.allocation, opts.target_se, [float(u) for u in ua], opts.min_per_class,
                    float(min_distance), opts.seed, points=points_digest(rows, cols))
    lut = dict(zip(ids, names, strict=True))
    write_points(out, rows, cols, transform, crs, {
        "sample_id": np.arange(1, len(rows) + 1, dtype=np.int32), "map_class": mapped,
        "map_class_name": np.array([lut[int(m)] for m in mapped], dtype=object)},
        overwrite=opts.overwrite,
        metadata={DESIGN_KEY: json.dumps({"map": str(Path(classes).resolve()),
                                          **design.to_dict()})})
    return SampleReport(out, design, names)


def read_design(path: str | Path) -> dict | None:
    """The design a sample written by :func:`sample_map` carries, or None."""
    import pyogrio

    try:
        meta = pyogrio.read_info(path, layer=data_layer(path)).get("layer_metadata") or {}
    except Exception:
        return None
    text = meta.get(DESIGN_KEY)
    return json.loads(text) if text else None


def check_design(design: dict, class_ids: list[int], pixels: np.ndarray, sample: str | Path,
                 prediction: str | Path) -> None:
    """Refuse a sample whose strata are not the map's: another map, or one since changed."""
    mine = dict(zip(design.get("class_ids", []), design.get("strata_pixels", []), strict=False))
    theirs = {int(i): int(n) for i, n in zip(class_ids, pixels, strict=True) if n > 0}
    if mine != theirs:
        diff = sorted(set(mine) ^ set(theirs)) or \
            [i for i in mine if mine[i] != theirs.get(i)]
        raise HsimapError(f"{sample}: drawn from a map whose strata differ from "
                          f"{Path(prediction).name}'s (class {diff[0]}: "
                          f"{mine.get(diff[0], 0):,} px in the design, "
                          f"{theirs.get(diff[0], 0):,} in the map); evaluate it against the "
                          f"map it was drawn from ({design.get('map', '?')})")
    if design.get("points"):
        import pyogrio
        import shapely

        meta, _, geom, fields = pyogrio.raw.read(sample, layer=data_layer(sample))
        values = dict(zip(meta["fields"], fields, strict=True))
        ids = values.get("sample_id")
        pts = shapely.from_wkb(geom)
        ok = ids is not None and all(p is not None and not p.is_empty for p in pts)
        if ok:
            with rasterio.open(prediction) as src:
                rows, cols = rasterio.transform.rowcol(src.transform, shapely.get_x(pts),
                                                       shapely.get_y(pts))
            order = np.argsort(np.asarray(ids), kind="stable")
            ok = points_digest(np.asarray(rows)[order], np.asarray(cols)[order]) == \
                design["points"]
        if not ok:
            raise HsimapError(f"{sample}: its points are not the ones `hsimap sample` drew "
                              "(moved, added, removed or doubled since); the estimates would "
                              "assume a design it no longer has. Fill in the reference field "
                              "only, or draw a new sample")
