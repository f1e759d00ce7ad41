"""``hsimap evaluate``: accuracy of a class map against reference labels."""

from __future__ import annotations

import json

import click

from hsimap.cli.options import (
    class_field_opt,
    json_opt,
    label_variable_opt,
    labels_opt,
    overwrite_opt,
    quiet_opt,
)

SUBSETS = ("train", "validation", "test")


@click.command("evaluate")
@click.argument("prediction", type=click.Path(exists=True))
@labels_opt("Reference labels: raster, vector or .mat, as for `hsimap train`.")
@class_field_opt
@label_variable_opt
@click.option("--split", "split_path", type=click.Path(exists=True), default=None,
              help="split.tif from the model folder: score only one subset.")
@click.option("--subset", type=click.Choice(SUBSETS), default="test", show_default=True,
              help="With --split: which labelled pixels to score (the split.tif of the "
                   "training run says which were train, validation and test).")
@click.option("--stratified", is_flag=True,
              help="The reference pixels are a stratified random sample of the map's classes: "
                   "add area-adjusted accuracy and area estimates with 95% intervals "
                   "(Olofsson et al. 2014).")
@json_opt
@click.option("--csv", "csv_path", type=click.Path(), default=None,
              help="Write the per-class report (accuracies, F1, areas) as CSV.")
@click.option("--confusion-csv", "confusion_path", type=click.Path(), default=None,
              help="Write the confusion matrix (counts) as CSV.")
@click.option("--png", "png_path", type=click.Path(), default=None,
              help="Write the confusion matrix, counts in its cells, as a picture.")
@overwrite_opt
@quiet_opt
def command(prediction, labels, class_field, label_variable, split_path, subset, stratified,
            as_json, csv_path, confusion_path, png_path, overwrite, quiet) -> None:
    """Score PREDICTION (a class map) against LABELS: an accuracy report.

    Confusion matrix with counts, producer's and user's accuracy, F1, OA, kappa and each
    class's mapped area; with --stratified, area-adjusted estimates with 95% intervals.
    """
    from hsimap.io.files import refuse_inputs
    from hsimap.workflows.evaluate import (
        check_report_path,
        evaluate,
        write_confusion_csv,
        write_confusion_png,
        write_report_csv,
    )

    refuse_inputs({"--csv": csv_path, "--confusion-csv": confusion_path, "--png": png_path},
                  [prediction, labels, split_path])
    for path in (csv_path, confusion_path, png_path):
        check_report_path(path, overwrite)
    ev = evaluate(prediction, labels, class_field=class_field, variable=label_variable,
                  split=split_path, subset=subset,
                  stratified=stratified)
    if as_json:
        click.echo(json.dumps(ev.to_dict()))
    else:
        _print_report(ev)
    if csv_path:
        write_report_csv(ev, csv_path, overwrite)
    if confusion_path:
        write_confusion_csv(ev, confusion_path, overwrite)
    if png_path:
        write_confusion_png(ev, png_path, overwrite)


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _pm(v, ci, spec: str = ".4f") -> str:
    """An estimate and its interval, or "-" where it is undefined (null in JSON and CSV)."""
    return "-" if v is None else f"{format(v, spec)} +- {_fmt(ci, spec)}"


def _print_report(ev) -> None:
    m, names, rows = ev.metrics, ev.names, ev.classes()
    click.echo(f"pixels {m.pixels}  OA {m.overall_accuracy:.4f}  AA {m.average_accuracy:.4f}"
               f"  kappa {m.kappa:.4f}  mIoU {m.mean_iou:.4f}")
    width = max(len(r["name"]) for r in rows)
    area = "mapped ha" if any(r["mapped_area_ha"] is not None for r in rows) else "mapped px"
    click.echo(f"{'class':<{width}}  reference  producer's  user's      F1  {area:>12}")
    for r in rows:
        mapped = r["mapped_area_ha"] if r["mapped_area_ha"] is not None else r["mapped_pixels"]
        click.echo(f"{r['name']:<{width}}  {r['reference_pixels']:>9}  "
                   f"{_fmt(r['producers_accuracy']):>10}  {_fmt(r['users_accuracy']):>6}  "
                   f"{_fmt(r['f1']):>6}  {_fmt(mapped, ',.2f'):>12}")
    a = ev.adjusted
    if a is not None:
        click.echo(f"area-adjusted (stratified sample, Olofsson et al. 2014; +- 95% interval): "
                   f"OA {a.overall_accuracy:.4f} +- {a.overall_accuracy_ci95:.4f}")
        click.echo(f"{'class':<{width}}  {'area ' + a.unit:>24}  {'producer' + chr(39) + 's':>17}"
                   f"  {'user' + chr(39) + 's':>17}")
        unit = "ha" if a.unit == "ha" else "pixels"
        for r in rows:
            area = _pm(r[f"adjusted_area_{unit}"], r[f"adjusted_area_{unit}_ci95"], ",.1f")
            prod = _pm(r["adjusted_producers_accuracy"], r["adjusted_producers_accuracy_ci95"])
            user = _pm(r["adjusted_users_accuracy"], r["adjusted_users_accuracy_ci95"])
            click.echo(f"{r['name']:<{width}}  {area:>24}  {prod:>17}  {user:>17}")
    click.echo("confusion (rows reference, columns map; counts):")
    click.echo(" " * (width + 2) + " ".join(f"{c:>7}" for c in m.class_ids) + "   other")
    for c, row, other in zip(m.class_ids, m.confusion, m.other, strict=True):
        click.echo(f"{names.name_of(c):<{width}}  " + " ".join(f"{v:>7}" for v in row)
                   + f" {other:>7}")
