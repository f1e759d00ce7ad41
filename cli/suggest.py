"""``hsimap suggest`` (experimental): where to label next, as a GeoPackage of points."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    at_least_one,
    class_field_opt,
    device_opt,
    label_variable_opt,
    labels_opt,
    min_distance_opt,
    output_opt,
    overwrite_opt,
    quiet_opt,
    seed_opt,
    thread_limit,
    threads_opt,
    workers_opt,
)


@click.command("suggest")
@click.argument("source", metavar="SCENE|PROBABILITIES", type=click.Path(exists=True,
                                                                         dir_okay=False))
@click.option("-m", "--model", "model_dir", type=click.Path(exists=True), default=None,
              help="Model folder: suggest from SCENE (not needed for a probabilities raster).")
@output_opt("GeoPackage of points to write (.gpkg).")
@click.option("-n", "n", type=int, callback=at_least_one, default=100, show_default=True,
              help="Points to suggest.")
@click.option("--measure", type=click.Choice(["margin", "entropy"]), default="margin",
              show_default=True,
              help="Which uncertainty orders the points: the margin between the two most "
                   "probable classes (smallest first), or the entropy of the probabilities "
                   "(largest first). Both are written.")
@click.option("--per-window", type=int, callback=at_least_one, default=None,
              help="Candidates at most from each 64 x 64 px cell of the scene, so that points "
                   "spread over it (default: 3, more where the scene has too few cells for N).")
@min_distance_opt("5")
@labels_opt("Labels already made (raster or vector on the scene's grid): passed over.",
            required=False, dest="labels_path")
@class_field_opt
@label_variable_opt
@workers_opt
@threads_opt
@device_opt
@seed_opt
@overwrite_opt
@quiet_opt
def command(source, model_dir, output, n, measure, per_window, min_distance, labels_path,
            class_field, label_variable, workers, threads, device, seed, overwrite, quiet) -> None:
    """The N pixels where the model is least sure, spread over the scene and the classes.

    Experimental: on the benchmarks (docs/benchmarks.md) its points are measured against as
    many drawn at random. Label the points' `reference` field (QGIS), add them to the
    training labels, and train again.
    """
    from hsimap.io.scene import open_scene
    from hsimap.workflows.suggest import SuggestOptions, suggest

    opts = SuggestOptions(n=n, measure=measure, per_window=per_window,
                          min_distance=min_distance, seed=seed, workers=workers or threads,
                          overwrite=overwrite, progress=not quiet)
    model = None
    if model_dir is not None:
        from hsimap.model.store import load_model, resolve_device

        model = load_model(model_dir, resolve_device(device))
    labels = None
    if labels_path is not None:
        from hsimap.io.labels import load_labels

        labels, _ = load_labels(labels_path, open_scene(source), class_field=class_field,
                                variable=label_variable, partial=True)
    with thread_limit(threads):
        r = suggest(source, output, opts, model=model, labels=labels, inputs=[labels_path])
    shares = ", ".join(f"{k} {v}" for k, v in r.per_class.items())
    click.echo(f"{r.points} points of {r.candidates} candidates ({shares}): {r.path}")
