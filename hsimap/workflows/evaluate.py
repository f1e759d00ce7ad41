"""Scoring a class map against reference labels: the numbers and the files of ``evaluate``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError
from hsimap.io.files import temp_name
from hsimap.io.labels import load_labels
from hsimap.io.rasters import read_class_table
from hsimap.io.scene import open_scene
from hsimap.metrics import Metrics, classification_metrics

SUBSETS = {s.name.lower(): s for s in Split}


@dataclass
class Evaluation:
    """Metrics of a map, and the class names to report them with."""

    metrics: Metrics
    names: ClassTable


def evaluate(prediction: str | Path, labels: str | Path, *, class_field: str | None = None,
             split: str | Path | None = None, subset: str = "test") -> Evaluation:
    """Score ``prediction`` against ``labels`` (raster, vector or .mat on its grid).

    With ``split`` (a model's split.tif), only the pixels of ``subset`` count.
    """
    with rasterio.open(prediction) as src:
        pred = src.read(1)
    truth, table = load_labels(labels, open_scene(prediction), class_field=class_field)
    map_table = read_class_table(prediction)
    if map_table is not None and _named(table) and _named(map_table):
        truth, table = _match_by_name(truth, table, map_table, labels)
    if split is not None:
        with rasterio.open(split) as src:
            codes = src.read(1)
        if codes.shape != truth.shape:
            raise HsimapError(f"{split}: split raster is not on the prediction's grid")
        truth = np.where(codes == SUBSETS[subset], truth, 0)
    try:
        m = classification_metrics(truth, pred, table.ids)
    except ValueError as exc:
        raise HsimapError(f"{labels}: {exc}") from None
    return Evaluation(m, map_table or table)


def _named(table: ClassTable) -> bool:
    """Whether a table carries real class names (not only the default "class N")."""
    return any(n != f"class {i}" for i, n in zip(table.ids, table.names, strict=True))


def _match_by_name(truth: np.ndarray, table: ClassTable, map_table: ClassTable,
                   source: str | Path) -> tuple[np.ndarray, ClassTable]:
    """Renumber the truth into the map's ids by class name (case-insensitive).

    A vector truth numbers its classes by its own sorted values, and a raster truth may number
    them otherwise: matched by number, an orchard polygon would be scored against maize.
    """
    by_name = {n.casefold(): i for i, n in zip(map_table.ids, map_table.names, strict=True)}
    missing = [n for n in table.names if n.casefold() not in by_name]
    if missing:
        raise HsimapError(f"{source}: classes {', '.join(missing)} are not among the map's "
                          f"classes ({', '.join(map_table.names)}); name them as the map does")
    lut = np.zeros(max(table.ids) + 1, dtype=np.int64)
    for i, n in zip(table.ids, table.names, strict=True):
        lut[i] = by_name[n.casefold()]
    return np.where(truth > 0, lut[np.clip(truth, 0, len(lut) - 1)], 0), map_table


def check_report_path(path: str | Path | None) -> None:
    """Refuse a report file whose folder is missing, before anything is evaluated."""
    if path is not None and not Path(path).parent.is_dir():
        raise HsimapError(f"{Path(path).parent}: folder does not exist")


def write_confusion_csv(ev: Evaluation, path: str | Path) -> Path:
    """The confusion matrix with class names, rows truth and columns prediction."""
    path = Path(path)
    check_report_path(path)
    m, names = ev.metrics, ev.names
    tmp = temp_name(path)
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["truth \\ prediction", *[names.name_of(c) for c in m.class_ids],
                        "other"])
            for c, row, other in zip(m.class_ids, m.confusion, m.other, strict=True):
                w.writerow([names.name_of(c), *row, other])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_confusion_png(ev: Evaluation, path: str | Path) -> Path:
    from hsimap.quicklook import confusion_png

    path = Path(path)
    check_report_path(path)
    m = ev.metrics
    confusion_png(np.asarray(m.confusion), [ev.names.name_of(c) for c in m.class_ids],
                  f"OA {m.overall_accuracy:.3f}  kappa {m.kappa:.3f}", path)
    return path
