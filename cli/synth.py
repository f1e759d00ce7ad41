"""``hsimap synth``: a georeferenced synthetic scene with known truth."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    at_least_one,
    output_opt,
    overwrite_opt,
    quiet_opt,
    seed_opt,
    warn_legacy,
)
from hsimap.synth import SynthSpec, make_scene


@click.command("synth")
@click.argument("output_arg", metavar="[OUTPUT]", required=False, type=click.Path())
@output_opt("Scene file to write: .tif, or ENVI .img/.bsq/.bil/.bip (OUTPUT as an argument "
            "still works).", required=False)
@click.option("--width", type=int, callback=at_least_one, default=256, show_default=True,
              help="Scene width, px.")
@click.option("--height", type=int, callback=at_least_one, default=256, show_default=True,
              help="Scene height, px.")
@click.option("--bands", type=int, callback=at_least_one, default=64, show_default=True,
              help="Spectral bands.")
@click.option("--endmembers", type=int, default=5, show_default=True,
              help="Materials mixed into the scene (from the embedded USGS library).")
@click.option("--classes", type=int, callback=at_least_one, default=4, show_default=True,
              help="Land-cover classes, each a mixture of the materials.")
@click.option("--snr", type=float, default=40.0, show_default=True, help="Signal-to-noise, dB.")
@click.option("--variability", type=float, default=0.05, show_default=True,
              help="Per-pixel endmember variability (relative).")
@click.option("--region-size", type=float, default=64.0, show_default=True,
              help="Typical class region size, px.")
@click.option("--pixel-size", type=float, default=2.0, show_default=True, help="Metres.")
@click.option("--crs", default="EPSG:32611", show_default=True,
              help="Coordinate reference system of the scene (any PROJ/EPSG string).")
@click.option("--dtype", type=click.Choice(["float32", "int16"]), default="float32",
              show_default=True, help="int16 stores reflectance x 10000 with a scale factor.")
@click.option("--nodata-edges", is_flag=True, help="Nodata outside a rotated flight-line strip.")
@seed_opt
@overwrite_opt
@quiet_opt
def command(output_arg, output, width, height, bands, endmembers, classes, snr, variability,
            region_size, pixel_size, crs, dtype, nodata_edges, seed, overwrite, quiet) -> None:
    """Write a synthetic scene (-o, .tif or ENVI) with its truth.

    Beside it: OUTPUT_labels.tif, OUTPUT_abundances.tif and OUTPUT_endmembers.sli/.hdr/.csv.
    Endmembers are real USGS spectra embedded in hsimap.
    """
    if (output is None) == (output_arg is None):
        raise click.UsageError("name the scene to write once, with -o/--output")
    if output_arg is not None:
        warn_legacy("synth OUTPUT (an argument)", "synth -o OUTPUT")
    output = output or output_arg
    spec = SynthSpec(width=width, height=height, bands=bands, endmembers=endmembers,
                     classes=classes, snr=snr, variability=variability, region_size=region_size,
                     pixel_size=pixel_size, crs=crs, dtype=dtype, nodata_edges=nodata_edges,
                     seed=seed)
    result = make_scene(output, spec, overwrite=overwrite)
    for p in (result.scene, result.labels, result.abundances, result.library):
        click.echo(f"wrote {p}")
