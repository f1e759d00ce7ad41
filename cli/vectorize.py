"""``hsimap vectorize``: a class map as polygons (GeoPackage)."""

from __future__ import annotations

import click

from hsimap.cli.options import overwrite_opt


@click.command("vectorize")
@click.argument("classes", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Vector file to write: .gpkg (default layer: its name), .fgb, .geojson, .shp.")
@click.option("--mmu", type=int, default=0, metavar="PIXELS",
              help="Minimum mapping unit: patches smaller than PIXELS first take the class of "
                   "their largest neighbour.")
@overwrite_opt
def command(classes, output, mmu, overwrite) -> None:
    """Polygons of the patches of CLASSES (a class map), with class id, name and area (ha)."""
    from hsimap.workflows.vectorize import vectorize

    r = vectorize(classes, output, mmu=mmu, overwrite=overwrite)
    click.echo(f"{r.features} polygons of {r.classes} classes: {r.path}")
