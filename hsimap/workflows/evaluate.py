"""Scoring a class map against reference labels: the numbers and the files of ``evaluate``.

The report is what a map-accuracy assessment needs: the confusion matrix with counts,
producer's and user's accuracy, F1, OA and kappa, each class's mapped area, and, when the
reference sample was drawn stratified by the map's classes, area-adjusted accuracy and area
estimates with 95% confidence intervals (:mod:`hsimap.accuracy`).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from hsimap.accuracy import AreaAdjusted, area_adjusted
from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError
from hsimap.io.areas import MappedArea, mapped_area
from hsimap.io.classmaps import open_class_map, read_class_table
from hsimap.io.files import atomic_output
from hsimap.io.labels import load_labels
from hsimap.io.scene import open_scene
from hsimap.metrics import Metrics, classification_metrics, json_number
from hsimap.workflows.sample import check_design, read_design

SUBSETS = {s.name.lower(): s for s in Split}


@dataclass
class Evaluation:
    """Metrics of a map, and the class names to report them with."""

    metrics: Metrics
    names: ClassTable
    mapped: MappedArea | None = None
    adjusted: AreaAdjusted | None = None

    def classes(self) -> list[dict]:
        """One record per class: the per-class part of the report (CSV rows, JSON)."""
        m, rows = self.metrics, []
        for i, c in enumerate(m.class_ids):
            row = {"id": c, "name": self.names.name_of(c),
                   "reference_pixels": int(sum(m.confusion[i]) + m.other[i]),
                   "mapped_pixels": None, "mapped_area_ha": None,
                   "producers_accuracy": m.producers_accuracy.get(c),
                   "users_accuracy": m.users_accuracy.get(c), "f1": m.f1.get(c)}
            if self.mapped is not None:
                row["mapped_pixels"] = int(self.mapped.pixels[i])
                if self.mapped.hectares is not None:
                    row["mapped_area_ha"] = float(self.mapped.hectares[i])
            a = self.adjusted
            if a is not None:
                unit = "ha" if a.unit == "ha" else "pixels"
                row.update({f"adjusted_area_{unit}": float(a.area[i]),
                            f"adjusted_area_{unit}_ci95": float(a.area_ci95[i]),
                            "adjusted_users_accuracy": float(a.users_accuracy[i]),
                            "adjusted_users_accuracy_ci95": float(a.users_accuracy_ci95[i]),
                            "adjusted_producers_accuracy": float(a.producers_accuracy[i]),
                            "adjusted_producers_accuracy_ci95":
                                float(a.producers_accuracy_ci95[i])})
            rows.append({k: json_number(v) for k, v in row.items()})
        return rows

    def to_dict(self) -> dict:
        d = self.metrics.to_dict()
        d["classes"] = self.classes()
        if self.adjusted is not None:
            d["area_adjusted"] = {"overall_accuracy": self.adjusted.overall_accuracy,
                                  "overall_accuracy_ci95": self.adjusted.overall_accuracy_ci95,
                                  "unit": self.adjusted.unit,
                                  "method": "Olofsson et al. 2014, stratified by map class"}
        return d


def evaluate(prediction: str | Path, labels: str | Path, *, class_field: str | None = None,
             variable: str | None = None, split: str | Path | None = None, subset: str = "test",
             stratified: bool = False) -> Evaluation:
    """Score ``prediction`` against ``labels`` (raster, vector or .mat on its grid).

    With ``split`` (a model's split.tif), only the pixels of ``subset`` count. With
    ``stratified`` (the reference pixels are a stratified random sample of the map's
    classes), area-adjusted accuracy and area estimates are added.
    """
    if class_field in ("map_class", "map_class_name"):
        raise HsimapError(f"{labels}: --class-field {class_field} holds the map's own class "
                          "(written by sample or suggest); score the map against the "
                          "reference field a person filled in (--class-field reference)")
    with open_class_map(prediction) as src:
        pred = src.read(1)
        nodata = src.nodata
    truth, table = load_labels(labels, open_scene(prediction), class_field=class_field,
                               variable=variable, partial=True)
    map_table = read_class_table(prediction)
    # A sample of `hsimap sample` holds the map's class ids by design.
    design = read_design(labels) if str(labels).lower().endswith(".gpkg") else None
    if map_table is not None and table.named and map_table.named:
        truth, table = _match_by_name(truth, table, map_table, labels)
    elif design is None and table.named != (map_table is not None and map_table.named):
        named = labels if table.named else prediction
        warnings.warn(f"only {Path(named).name} names its classes; map and reference are "
                      "matched by class id", stacklevel=2)
    if map_table is not None:
        unknown = sorted(set(int(v) for v in np.unique(truth) if v != 0) - set(map_table.ids))
        if unknown:
            raise HsimapError(f"{labels}: reference class id {unknown[0]} is no class of the "
                              f"map (its classes: {', '.join(map(str, map_table.ids))}); "
                              "correct the reference (a typing error?)")
    if split is not None:
        with rasterio.open(split) as src:
            codes = src.read(1)
        if codes.shape != truth.shape:
            raise HsimapError(f"{split}: split raster is not on the prediction's grid")
        truth = np.where(codes == SUBSETS[subset], truth, 0)
    # The map's classes are the strata, all of them: a mapped class with no reference pixel
    # of its own still holds reference pixels of others, and its area must be counted.
    mapped_ids = {int(v) for v in np.unique(pred) if v != 0 and v != nodata}
    ids = sorted(set(table.ids) | mapped_ids)
    try:
        m = classification_metrics(truth, pred, ids)
    except ValueError as exc:
        raise HsimapError(f"{labels}: {exc}") from None
    names = map_table or table
    mapped = mapped_area(prediction, m.class_ids)
    adjusted = None
    if design is not None:  # a sample of `hsimap sample`: its strata must be this map's
        check_design(design, m.class_ids, mapped.pixels, labels, prediction)
        if not stratified:
            warnings.warn(f"{Path(labels).name} is a stratified sample of the map; "
                          "--stratified gives its unbiased estimates", stacklevel=2)
    if stratified:
        sample = np.asarray(m.confusion).T    # rows: the map's class (the strata)
        ha = mapped.hectares
        total, unit = (float(ha.sum()), "ha") if ha is not None else \
            (float(mapped.pixels.sum()), "pixels")
        adjusted = area_adjusted(sample, mapped.pixels, total, unit,
                                 [names.name_of(c) for c in m.class_ids])
    return Evaluation(m, names, mapped, adjusted)


def _match_by_name(truth: np.ndarray, table: ClassTable, map_table: ClassTable,
                   source: str | Path) -> tuple[np.ndarray, ClassTable]:
    """Renumber the truth into the map's ids by class name (case-insensitive).

    A vector truth numbers its classes by its own sorted values, and a raster truth may number
    them otherwise: matched by number, an orchard polygon would be scored against maize.
    """
    names = dict(zip(table.ids, table.names, strict=True))
    return map_table.renumber_by_name(truth, names, f"{source} (against the map)"), map_table


def check_report_path(path: str | Path | None, overwrite: bool = False) -> None:
    """Refuse a report file that exists (unless ``overwrite``) or whose folder is missing,
    before anything is evaluated."""
    if path is None:
        return
    if Path(path).is_dir():
        raise HsimapError(f"{path}: is a folder; name the report file")
    if not Path(path).parent.is_dir():
        raise HsimapError(f"{Path(path).parent}: folder does not exist")
    if Path(path).exists() and not overwrite:
        raise HsimapError(f"{path}: exists; use --overwrite to replace it")


def write_report_csv(ev: Evaluation, path: str | Path, overwrite: bool = False) -> Path:
    """The per-class report: one row per class (:meth:`Evaluation.classes`)."""
    path = Path(path)
    check_report_path(path, overwrite)
    rows = ev.classes()
    with atomic_output(path, overwrite) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return path


def write_confusion_csv(ev: Evaluation, path: str | Path, overwrite: bool = False) -> Path:
    """The confusion matrix with class names, rows truth and columns prediction."""
    path = Path(path)
    check_report_path(path, overwrite)
    m, names = ev.metrics, ev.names
    with atomic_output(path, overwrite) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["truth \\ prediction", *[names.name_of(c) for c in m.class_ids],
                    "other"])
        for c, row, other in zip(m.class_ids, m.confusion, m.other, strict=True):
            w.writerow([names.name_of(c), *row, other])
    return path


def write_confusion_png(ev: Evaluation, path: str | Path, overwrite: bool = False) -> Path:
    from hsimap.quicklook import confusion_png

    path = Path(path)
    check_report_path(path, overwrite)
    m = ev.metrics
    confusion_png(np.asarray(m.confusion), [ev.names.name_of(c) for c in m.class_ids],
                  f"OA {m.overall_accuracy:.3f}  kappa {m.kappa:.3f}", path, overwrite)
    return path
