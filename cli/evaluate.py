"""``hsimap evaluate``: accuracy of a class map against reference labels."""

from __future__ import annotations

import json

import click

from hsimap.cli.options import json_opt

SUBSETS = ("train", "validation", "test")


@click.command("evaluate")
@click.argument("prediction", type=click.Path(exists=True))
@click.option("-l", "--labels", required=True, type=click.Path(exists=True),
              help="Reference labels: raster, vector or .mat, as for `hsimap train`.")
@click.option("--class-field", default=None, help="Vector attribute holding the class.")
@click.option("--split", "split_path", type=click.Path(exists=True), default=None,
              help="split.tif from the model folder: score only one subset.")
@click.option("--subset", type=click.Choice(SUBSETS), default="test", show_default=True)
@json_opt
@click.option("--csv", "csv_path", type=click.Path(), default=None,
              help="Write the confusion matrix as CSV.")
@click.option("--png", "png_path", type=click.Path(), default=None,
              help="Write the confusion matrix as a picture.")
def command(prediction, labels, class_field, split_path, subset, as_json, csv_path,
            png_path) -> None:
    """Score PREDICTION (a class map) against LABELS: OA, AA, kappa, per-class, IoU."""
    from hsimap.workflows.evaluate import (
        check_report_path,
        evaluate,
        write_confusion_csv,
        write_confusion_png,
    )

    check_report_path(csv_path)
    check_report_path(png_path)
    ev = evaluate(prediction, labels, class_field=class_field, split=split_path, subset=subset)
    m, names = ev.metrics, ev.names
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
        click.echo(" " * (width + 2) + " ".join(f"{c:>7}" for c in m.class_ids) + "   other")
        for c, row, other in zip(m.class_ids, m.confusion, m.other, strict=True):
            click.echo(f"{names.name_of(c):<{width}}  " + " ".join(f"{v:>7}" for v in row)
                       + f" {other:>7}")
    if csv_path:
        write_confusion_csv(ev, csv_path)
    if png_path:
        write_confusion_png(ev, png_path)
