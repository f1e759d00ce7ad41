"""``hsimap vectorize``: a class map as polygons (GeoPackage)."""

from __future__ import annotations

import click

from hsimap.cli.options import mmu_opt, output_opt, overwrite_opt, quiet_opt


@click.command("vectorize")
@click.argument("classes", type=click.Path(exists=True, dir_okay=False))
@output_opt("Vector file to write: .gpkg (default layer: its name), .fgb, .geojson, .shp.")
@mmu_opt
@overwrite_opt
@quiet_opt
def command(classes, output, mmu, overwrite, quiet) -> None:
    """Polygons of the patches of CLASSES (a class map), with class id, name and area (ha)."""
    from hsimap.workflows.vectorize import vectorize

    r = vectorize(classes, output, mmu=mmu, overwrite=overwrite)
    click.echo(f"{r.features} polygons of {r.classes} classes: {r.path}")
