"""``hsimap predict``: a whole scene, streamed in windows, to GIS-ready maps."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    cog_opt,
    creation_opt,
    device_opt,
    model_opt,
    output_opt,
    overwrite_opt,
    quiet_opt,
    scene_arg,
    variable_opt,
    workers_opt,
)


@click.command("predict")
@scene_arg
@model_opt
@output_opt
@click.option("--window", type=int, default=None, help="Window size, px (default: the model's).")
@click.option("--halo", type=int, default=None, help="Halo, px (default: the model's).")
@workers_opt
@device_opt
@cog_opt
@creation_opt
@click.option("--ignore-wavelengths", is_flag=True,
              help="Proceed although the scene's wavelengths differ from the model's.")
@click.option("--ignore-scale", is_flag=True,
              help="Proceed although the scene's values are on another scale than the "
                   "model's training scene (other units).")
@click.option("--mmu", type=int, default=0, metavar="PIXELS",
              help="Minimum mapping unit: class patches smaller than PIXELS (8-connected) "
                   "take the class of their largest neighbour.")
@click.option("--stac", is_flag=True,
              help="Also write SCENE_item.json, a STAC Item of the outputs (needs pystac).")
@click.option("--no-quicklooks", is_flag=True, help="Skip the PNG quicklooks.")
@variable_opt
@overwrite_opt
@quiet_opt
def command(scene, model_dir, output, window, halo, workers, device, cog, creation_options,
            ignore_wavelengths, ignore_scale, mmu, stac, no_quicklooks, variable, overwrite,
            quiet) -> None:
    """Classify and unmix SCENE with a trained model; write maps to the output folder.

    Writes SCENE_classes.tif, SCENE_abundances.tif, SCENE_confidence.tif, SCENE_error.tif,
    SCENE_endmembers.sli/.hdr/.csv, SCENE_areas.csv (area per class), QGIS styles
    (SCENE_classes.qml, SCENE_abundances.qml) and PNG quicklooks, on the scene's grid and
    CRS. The set appears together, replacing a previous one only when complete.
    """
    # torch is imported only when a command needs it, so that `hsimap info` starts fast.
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model, resolve_device
    from hsimap.products import write_outputs

    model = load_model(model_dir, resolve_device(device))
    data = open_scene(scene, variable=variable)
    report = write_outputs(data, model, output, window=window, halo=halo, workers=workers,
                           cog=cog, overwrite=overwrite, creation_options=creation_options,
                           progress=not quiet, quicklooks=not no_quicklooks,
                           ignore_wavelengths=ignore_wavelengths, ignore_scale=ignore_scale,
                           mmu=mmu, stac=stac)
    rate = report.pixels / max(report.seconds, 1e-9)
    click.echo(f"{report.pixels} px in {report.seconds:.1f} s ({rate:,.0f} px/s, "
               f"{report.windows} windows)")
    for key, path in report.paths.items():
        click.echo(f"{key:>15}: {path}")
