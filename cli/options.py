"""Options shared by hsimap's commands: one definition each, the same meaning everywhere."""

from __future__ import annotations

from pathlib import Path

import click

from hsimap.errors import HsimapError
from hsimap.io.rasters import parse_creation_options


def _existing(ctx: click.Context, param: click.Parameter, value: str | None
              ) -> Path | str | None:
    """A path that exists; GDAL virtual paths and URLs (/vsizip/, s3://) are left to GDAL."""
    from hsimap.io.scene import is_virtual

    if value is None:
        return None
    if is_virtual(value):
        return value
    p = Path(value)
    if not p.exists():
        raise click.BadParameter(f"{value}: no such file or folder", ctx=ctx, param=param)
    return p


def existing_all(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                 ) -> list[Path | str]:
    return [_existing(ctx, param, v) for v in values]


def _creation(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict:
    try:
        return parse_creation_options(value)
    except HsimapError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


scene_arg = click.argument("scene", metavar="SCENE", callback=_existing)
output_opt = click.option("-o", "--output", required=True, type=click.Path(),
                          help="Output folder (or file, for commands that write one).")
overwrite_opt = click.option("--overwrite", is_flag=True,
                             help="Replace outputs that already exist.")
creation_opt = click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                            callback=_creation,
                            help="GDAL creation option for raster outputs (repeatable).")
cog_opt = click.option("--cog", is_flag=True,
                       help="Write Cloud Optimized GeoTIFFs with overviews.")
model_opt = click.option("-m", "--model", "model_dir", required=True, callback=_existing,
                         help="Model folder written by `hsimap train`.")
variable_opt = click.option("--variable", default=None,
                            help="Variable holding the cube in .mat scenes (default: detected).")
device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                          show_default=True, help="Where the model runs.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
workers_opt = click.option(
    "--workers", type=int, default=None,
    help="Parallel windows (threads); default: the core count.")


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    return value or bool(ctx.meta.get("hsimap.quiet"))


quiet_opt = click.option("-q", "--quiet", is_flag=True, callback=_quiet,
                         help="No progress bar (`hsimap -q` says it for every command).")
