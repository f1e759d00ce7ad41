"""``hsimap predict``: a whole scene, streamed in windows, to GIS-ready maps."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    build_predict_options,
    device_opt,
    mask_opt,
    model_opt,
    output_opt,
    overwrite_opt,
    predict_options,
    quiet_opt,
    scene_arg,
    thread_limit,
    threads_opt,
    variable_opt,
    workers_opt,
)


@click.command("predict")
@scene_arg
@model_opt
@output_opt("Folder for the scene's outputs (created if missing).")
@predict_options
@workers_opt
@threads_opt
@device_opt
@variable_opt
@mask_opt
@overwrite_opt
@quiet_opt
def command(scene, model_dir, output, workers, threads, device, variable, mask, overwrite,
            quiet, **options) -> None:
    """Classify and unmix SCENE with a trained model; write maps to the output folder.

    Writes SCENE_classes.tif, SCENE_abundances.tif, SCENE_confidence.tif, SCENE_error.tif,
    SCENE_endmembers.sli/.hdr/.csv, SCENE_areas.csv (area per class), QGIS styles
    (SCENE_classes.qml, SCENE_abundances.qml) and PNG quicklooks, on the scene's grid and
    CRS; with --probabilities also SCENE_probabilities.tif (and its .qml). The set appears
    together, replacing a previous one only when complete.
    """
    opts = build_predict_options(options, workers=workers or threads, overwrite=overwrite,
                                 progress=not quiet)
    opts.check()   # before torch is imported: a refused option is said in a second, not three
    # torch is imported only when a command needs it, so that `hsimap info` starts fast.
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model, resolve_device
    from hsimap.workflows.predict import predict_scene

    model = load_model(model_dir, resolve_device(device))
    data = open_scene(scene, variable=variable, mask=mask)
    with thread_limit(threads):
        report = predict_scene(data, model, output, opts)
    rate = report.pixels / max(report.seconds, 1e-9)
    click.echo(f"{report.pixels} px in {report.seconds:.1f} s ({rate:,.0f} px/s, "
               f"{report.windows} windows)")
    for key, path in report.paths.items():
        click.echo(f"{key:>15}: {path}")
