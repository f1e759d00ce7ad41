"""``hsimap sample``: a stratified random reference sample of a class map (GeoPackage)."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    min_distance_opt,
    output_opt,
    overwrite_opt,
    quiet_opt,
    seed_opt,
)
from hsimap.design import ALLOCATIONS


@click.command("sample")
@click.argument("classes", metavar="MAP", type=click.Path(exists=True, dir_okay=False))
@output_opt("GeoPackage of sample points to write (.gpkg).")
@click.option("--target-se", type=float, default=0.01, show_default=True,
              help="Standard error of overall accuracy the sample size is set for "
                   "(Olofsson et al. 2014, eq. 13).")
@click.option("--expected-ua", default="0.8", show_default=True, metavar="VALUE|CSV",
              help="User's accuracy expected of each class: one value, or a CSV with columns "
                   "id (or name) and expected_ua.")
@click.option("--allocation", type=click.Choice(ALLOCATIONS), default="olofsson",
              show_default=True,
              help="Sample per class: in proportion to area, equal, or olofsson (a minimum "
                   "per class, the rest in proportion to area).")
@click.option("--min-per-class", type=int, default=50, show_default=True,
              help="Points at least in each class (fewer where a class has fewer pixels).")
@min_distance_opt(None)
@seed_opt
@overwrite_opt
@quiet_opt
def command(classes, output, target_se, expected_ua, allocation, min_per_class, min_distance,
            seed, overwrite, quiet) -> None:
    """A stratified random sample of MAP's pixels, for an honest accuracy assessment.

    The strata are MAP's classes. Fill the points' empty `reference` field with the class id
    seen on the ground or in imagery (QGIS: toggle editing, attribute table), then run
    `hsimap evaluate --stratified MAP -l SAMPLE.gpkg --class-field reference`.
    """
    from hsimap.workflows.sample import SampleOptions, sample_map

    r = sample_map(classes, output, SampleOptions(
        target_se=target_se, expected_ua=expected_ua, allocation=allocation,
        min_per_class=min_per_class, min_distance=min_distance, seed=seed,
        overwrite=overwrite))
    d = r.design
    width = max(len(n) for n in r.names + ["class"])
    click.echo(f"{'id':>5}  {'class':<{width}}  {'pixels (N_i)':>12}  {'weight':>7}  "
               f"{'planned':>7}  {'drawn':>5}")
    total = sum(d.strata)
    for i, n, big, plan, got in zip(d.class_ids, r.names, d.strata, d.planned, d.drawn,
                                    strict=True):
        click.echo(f"{i:>5}  {n:<{width}}  {big:>12,}  {big / total:>7.4f}  {plan:>7}  "
                   f"{got:>5}")
    click.echo(f"{sum(d.drawn)} points ({d.allocation} allocation, target SE of OA "
               f"{d.target_se}): {r.path}")
    if sum(d.drawn) < sum(d.planned):
        import warnings

        warnings.warn(f"{sum(d.planned) - sum(d.drawn)} points could not be placed that far "
                      "apart", stacklevel=1)
