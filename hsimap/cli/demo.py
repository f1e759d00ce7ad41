"""``hsimap demo``: the whole job on an embedded synthetic scene, no download."""

from __future__ import annotations

from pathlib import Path

import click

from hsimap.cli.options import overwrite_opt
from hsimap.io.scene import open_scene, scene_info
from hsimap.synth import SynthSpec, make_scene


@click.command("demo")
@click.option("-o", "--output", default="demo-output", show_default=True, type=click.Path(),
              help="Folder for the demo's files.")
@overwrite_opt
def command(output, overwrite) -> None:
    """Make a georeferenced synthetic scene from embedded USGS spectra and describe it."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    made = make_scene(out / "demo_scene.tif", SynthSpec(width=200, height=160, bands=48),
                      overwrite=overwrite)
    info = scene_info(open_scene(made.scene))
    click.echo(f"scene: {made.scene} ({info.width} x {info.height} px, {info.bands} bands, "
               f"{info.crs})")
    for p in (made.labels, made.abundances, made.library):
        click.echo(f"truth: {p}")
