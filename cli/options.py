"""Options shared by hsimap's commands: one definition each, the same meaning everywhere."""

from __future__ import annotations

from pathlib import Path

import click

from hsimap.errors import HsimapError
from hsimap.io.gdal import parse_creation_options


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


def output_opt(what: str = "Output folder.", *, default: str | None = None,
               required: bool = True):
    """``-o/--output``, the one definition: ``what`` says what the command writes there;
    required unless the command has a ``default`` (or says otherwise)."""
    return click.option("-o", "--output", required=required and default is None,
                        default=default,
                        show_default=default is not None, type=click.Path(), help=what)


def window_opt(default: int | None, what: str = "Window size, px."):
    """``--window``: the square read window a model runs on."""
    return click.option("--window", type=int, default=default, show_default=default is not None,
                        help=what)


def halo_opt(default: int | None, what: str = "Context around each window's core, px."):
    """``--halo``: what each window reads beyond its core (discarded after)."""
    return click.option("--halo", type=int, default=default, show_default=default is not None,
                        help=what)


mmu_opt = click.option("--mmu", type=int, default=0, metavar="PIXELS",
                       help="Minimum mapping unit: class patches smaller than PIXELS "
                            "(8-connected) take the class of their largest neighbour.")
stac_opt = click.option("--stac", is_flag=True,
                        help="Also write SCENE_item.json, a STAC Item of the outputs (needs "
                             "pystac).")
no_quicklooks_opt = click.option("--no-quicklooks", is_flag=True,
                                 help="Skip the PNG quicklooks.")
overwrite_opt = click.option("--overwrite", is_flag=True,
                             help="Replace outputs that already exist.")
creation_opt = click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                            callback=_creation,
                            help="GDAL creation option for raster outputs (repeatable).")
cog_opt = click.option("--cog", is_flag=True,
                       help="Write Cloud Optimized GeoTIFFs with overviews.")
model_opt = click.option("-m", "--model", "model_dir", required=True, callback=_existing,
                         help="Model folder written by `hsimap train`.")
mask_opt = click.option(
    "--mask", default=None, metavar="LAYERS|none",
    help="For sensor products: the quality layers whose flagged pixels are nodata in every "
         "output, comma-separated, or none. EnMAP L2A: cloud, cloudshadow, haze, snow, cirrus "
         "(default: all). EMIT L2A (read from the granule's EMIT_L2A_MASK file beside it): "
         "cloud, cirrus, water, spacecraft, dilated_cloud, aggregate (default: cloud, "
         "cirrus, dilated_cloud, spacecraft). PRISMA L2D (its pixel error matrices; it has no "
         "cloud mask): invalid, negative, saturated (default: invalid, saturated).")
label_variable_opt = click.option(
    "--label-variable", default=None,
    help="Variable holding the labels in a .mat label file (default: the integer image of the "
         "scene's size, or a whole multiple of it).")
variable_opt = click.option("--variable", default=None,
                            help="Variable holding the cube in .mat scenes (default: detected).")
device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                          show_default=True, help="Where the model runs.")


def precision_opt(default: str, what: str):
    """``--precision``: what the network's convolutions and matrix products compute in."""
    from hsimap.runtime import PRECISIONS

    return click.option("--precision", type=click.Choice(PRECISIONS), default=default,
                        show_default=True, help=what)


PRECISION_HELP = ("What the network's convolutions and matrix products compute in: bf16 "
                  "(bfloat16, several times faster where the CPU has AVX512-BF16 or AMX, and "
                  "on GPUs; class maps agree with fp32 on 99.5% of pixels or more), fp32, or "
                  "auto (bf16 where it is fast, else fp32). The scan, softmax and "
                  "reconstruction stay float32.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def at_least_one(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A count of workers, jobs or threads: 1 or more (or unset)."""
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}", ctx=ctx, param=param)
    return value


workers_opt = click.option(
    "--workers", type=int, default=None, callback=at_least_one,
    help="Windows computed at once, one thread each (default: --threads).")
threads_opt = click.option(
    "--threads", type=int, default=None, callback=at_least_one,
    help="CPU threads this run may use in all: torch, the fused scan, BLAS and windows "
         "computed at once (default: the cores this process may use). Two runs on one "
         "machine: give each its share.")


def thread_limit(threads: int | None):
    """The one meaning of --threads: the compute budget of the run (a context manager).
    Unset, the libraries keep the pools they size themselves (and threadpoolctl, which
    inspects every loaded library, is not imported at all)."""
    if threads is None:
        from contextlib import nullcontext

        return nullcontext()
    from hsimap.runtime import thread_budget

    return thread_budget(threads)


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    quiet = value or bool(ctx.meta.get("hsimap.quiet"))
    if quiet:
        silence()
    return quiet


def silence() -> None:
    """What -q means, wherever it is given: no warnings and no library chatter (progress bars
    are the command's to leave out)."""
    import logging
    import warnings

    logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")


quiet_opt = click.option("-q", "--quiet", is_flag=True, callback=_quiet,
                         help="No progress bar and no warnings: only results and errors "
                              "(`hsimap -q COMMAND` and `hsimap COMMAND -q` alike).")


def labels_opt(what: str, *, required: bool = True, multiple: bool = False,
               dest: str = "labels"):
    """``-l/--labels``: class raster, vector file or .mat, read by hsimap.io.labels."""
    return click.option("-l", "--labels", dest, required=required, multiple=multiple,
                        type=click.Path(exists=not multiple), default=None, help=what)


class_field_opt = click.option(
    "--class-field", default=None,
    help="Vector attribute holding the class (default: a field named class, label, class_id "
         "or reference).")
name_library_opt = click.option(
    "--name-library", type=click.Path(exists=True), default=None,
    help="Spectral library (.sli or .csv, with wavelengths) whose nearest spectrum by spectral "
         "angle names each endmember (default: the embedded USGS one).")


def min_distance_opt(default: str | None):
    """``--min-distance``: points at least this far apart (pixels, or metres with m)."""
    return click.option("--min-distance", default=default, show_default=default is not None,
                        metavar="PX|Nm",
                        help="Points at least this far apart: pixels (5) or metres (150m).")


# Flags that mean something else on some command, and why; every other flag has one help
# text wherever it appears (tests/test_first_hour.py holds every command to this).
SEVERAL_MEANINGS = {
    "--output": "what a command writes differs: a folder, a scene file, a model, a vector file",
    "--window": "train sets the model's window; predict and batch override it; unmix has its own",
    "--halo": "as --window",
    "--labels": "training labels (train, one per scene), reference labels (evaluate), labels "
                "already made (suggest): the same kinds of file, read the same way",
    "--classes": "train: a CSV of class names and colours; synth: how many classes to make",
    "--endmembers": "train and unmix: how many to learn or find; synth: how many to mix in",
    "--workers": "batch: windows of each scene, one worker process per scene beside --jobs "
                 "(default 1); elsewhere the windows of the one scene (default: --threads)",
    "--model": "suggest: optional, a probabilities raster needs none",
    "--overwrite": "batch: also redo scenes its manifest records as done",
    "--precision": "predict, batch, unmix: the applied network (default auto); train: the "
                   "training steps (default fp32: bf16 training's accuracy is not measured)",
}


LEGACY_REMOVED_IN = "0.4"


def legacy(old: str, new: str) -> str:
    """The one way an old name kept for old scripts is handled: its (hidden) help, and the
    warning a run that uses it prints, both naming the version that removes it."""
    return f"{old} is the old name of {new}; it goes in hsimap {LEGACY_REMOVED_IN}"


def warn_legacy(old: str, new: str) -> None:
    if not click.get_current_context().meta.get("hsimap.quiet"):
        click.echo(f"Warning: {legacy(old, new)}", err=True)


# What `hsimap predict` and `hsimap batch` share: every option of a prediction, once.
_PREDICT = [
    window_opt(None, "Window size, px (default: the model's)."),
    halo_opt(None, "Halo, px (default: the model's)."),
    click.option("--ignore-wavelengths", is_flag=True,
                 help="Proceed although the scene's wavelengths differ from the model's."),
    click.option("--ignore-scale", is_flag=True,
                 help="Proceed although the scene's values are on another scale than the "
                      "model's training scene (other units)."),
    mmu_opt,
    click.option("--probabilities", is_flag=True,
                 help="Also write SCENE_probabilities.tif: one band per class, the model's "
                      "probability of it."),
    click.option("--probabilities-type", type=click.Choice(["float32", "uint8"]),
                 default="float32", show_default=True,
                 help="How probabilities are stored: float32, or uint8 0-254 with a scale "
                      "factor of 1/254 (255 nodata; for large scenes)."),
    stac_opt,
    no_quicklooks_opt,
    cog_opt,
    creation_opt,
    precision_opt("auto", PRECISION_HELP),
]
PREDICT_KEYS = ("window", "halo", "ignore_wavelengths", "ignore_scale", "mmu", "probabilities",
                "probabilities_type", "stac", "no_quicklooks", "cog", "creation_options",
                "precision")


def predict_options(f):
    """Every option of a prediction, on a command (predict, batch)."""
    for opt in reversed(_PREDICT):
        f = opt(f)
    return f


def build_predict_options(values: dict, *, workers: int | None, overwrite: bool,
                          progress: bool):
    """The :class:`~hsimap.workflows.options.PredictOptions` that ``values`` (the command's
    keyword arguments; those of :data:`PREDICT_KEYS` are taken out) say."""
    from hsimap.products import OutputOptions
    from hsimap.workflows.options import PredictOptions

    v = {k: values.pop(k) for k in PREDICT_KEYS}
    out = OutputOptions(workers=workers, cog=v["cog"], creation_options=v["creation_options"],
                        overwrite=overwrite, quicklooks=not v["no_quicklooks"],
                        progress=progress, mmu=v["mmu"], stac=v["stac"])
    return PredictOptions(window=v["window"], halo=v["halo"],
                          ignore_wavelengths=v["ignore_wavelengths"],
                          ignore_scale=v["ignore_scale"],
                          probabilities=v["probabilities_type"] if v["probabilities"] else None,
                          precision=v["precision"],
                          output=out)
