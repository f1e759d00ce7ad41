"""``hsimap evaluate``: accuracy of a class map against reference labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np
import rasterio

from hsimap.cli.options import json_opt
from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene
from hsimap.io.writers import read_class_table
from hsimap.labels import load_labels
from hsimap.metrics import classification_metrics

SUBSETS = {"train": 1, "validation": 2, "test": 3}


@click.command("evaluate")
@click.argument("prediction", type=click.Path(exists=True))
@click.option("-l", "--labels", required=True, type=click.Path(exists=True),
              help="Reference labels: raster, vector or .mat, as for `hsimap train`.")
@click.option("--class-field", default=None, help="Vector attribute holding the class.")
@click.option("--split", "split_path", type=click.Path(exists=True), default=None,
              help="split.tif from the model folder: score only one subset.")
@click.option("--subset", type=click.Choice(list(SUBSETS)), default="test", show_default=True)
@json_opt
@click.option("--csv", "csv_path", type=click.Path(), default=None,
              help="Write the confusion matrix as CSV.")
@click.option("--png", "png_path", type=click.Path(), default=None,
              help="Write the confusion matrix as a picture.")
def command(prediction, labels, class_field, split_path, subset, as_json, csv_path,
            png_path) -> None:
    """Score PREDICTION (a class map) against LABELS: OA, AA, kappa, per-class, IoU."""
    with rasterio.open(prediction) as src:
        pred = src.read(1)
    grid_scene = open_scene(prediction)
    truth, table = load_labels(labels, grid_scene, class_field=class_field)
    if split_path:
        with rasterio.open(split_path) as src:
            split = src.read(1)
        if split.shape != truth.shape:
            raise HsimapError(f"{split_path}: split raster is not on the prediction's grid")
        truth = np.where(split == SUBSETS[subset], truth, 0)
    names = read_class_table(prediction) or table
    try:
        m = classification_metrics(truth, pred, table.ids)
    except ValueError as exc:
        raise HsimapError(f"{labels}: {exc}") from None
    if as_json:
        click.echo(json.dumps(m.to_dict()))
    else:
        click.echo(f"pixels {m.pixels}  OA {m.overall_accuracy:.4f}  AA {m.average_accuracy:.4f}"
                   f"  kappa {m.kappa:.4f}  mIoU {m.mean_iou:.4f}")
        width = max(len(names.name_of(c)) for c in m.class_ids)
        click.echo(f"{'class':<{width}}  accuracy     IoU")
        for c in m.class_ids:
            if c in m.per_class_accuracy:
                click.echo(f"{names.name_of(c):<{width}}  {m.per_class_accuracy[c]:8.4f}"
                           f"  {m.per_class_iou[c]:6.4f}")
        click.echo("confusion (rows truth, columns prediction):")
        click.echo(" " * (width + 2) + " ".join(f"{c:>7}" for c in m.class_ids))
        for c, row in zip(m.class_ids, m.confusion, strict=True):
            click.echo(f"{names.name_of(c):<{width}}  " + " ".join(f"{v:>7}" for v in row))
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["truth \\ prediction", *[names.name_of(c) for c in m.class_ids]])
            for c, row in zip(m.class_ids, m.confusion, strict=True):
                w.writerow([names.name_of(c), *row])
    if png_path:
        _confusion_png(m, names, Path(png_path))


def _confusion_png(m, names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hsimap.outputs import save_figure

    cm = np.asarray(m.confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labels = [names.name_of(c) for c in m.class_ids]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.6 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"OA {m.overall_accuracy:.3f}  kappa {m.kappa:.3f}")
    save_figure(fig, path)
