"""``hsimap batch``: many flight lines, one model, on a local or remote dask cluster."""

from __future__ import annotations

import signal
import sys

import click

from hsimap.cli.options import (
    at_least_one,
    build_predict_options,
    device_opt,
    legacy,
    model_opt,
    output_opt,
    overwrite_opt,
    predict_options,
    quiet_opt,
    threads_opt,
    warn_legacy,
)
from hsimap.errors import Stopped
from hsimap.workflows.batch import BatchOptions, expand_scenes, run_batch


def _stop(signum, frame) -> None:
    raise Stopped("batch stopped by SIGTERM; rerun the same command to resume")


@click.command("batch")
@click.argument("scenes", nargs=-1)
@model_opt
@output_opt("Folder holding one folder of outputs per scene, the manifest and the VRT.")
@click.option("--list", "list_file", type=click.Path(exists=True), default=None,
              help="File with one scene path a line.")
@click.option("-j", "--jobs", type=int, default=None, callback=at_least_one,
              help="Scenes at once: worker processes of the local cluster "
                   "(default: --threads, or the cores, / --workers).")
@click.option("--workers", type=int, default=1, show_default=True, callback=at_least_one,
              help="Parallel windows (threads) of each scene, as in `hsimap predict`.")
@click.option("--threads-per-worker", "workers_old", type=int, default=None, hidden=True,
              callback=at_least_one, help=legacy("--threads-per-worker", "--workers"))
@threads_opt
@click.option("--scheduler", default=None,
              help="Existing cluster: tcp://HOST:PORT or a scheduler JSON file.")
@overwrite_opt
@click.option("--force", "overwrite_old", is_flag=True, hidden=True,
              help=legacy("--force", "--overwrite"))
@click.option("--vrt", is_flag=True, help="Also write a GDAL VRT mosaic of the class maps.")
@predict_options
@device_opt
@quiet_opt
def command(scenes, model_dir, output, list_file, jobs, workers, workers_old, threads, scheduler,
            overwrite, overwrite_old, vrt, device, quiet, **predict) -> None:
    """Predict every scene in SCENES (paths or quoted globs) into OUTDIR/<scene>/.

    Every option of `hsimap predict` applies to each scene. A manifest
    (OUTDIR/manifest.jsonl) records each scene; a rerun skips the scenes already done with the
    same model, input and options (--overwrite redoes them, replacing their outputs). Exits
    non-zero if any scene failed.
    """
    paths = expand_scenes(list(scenes), list_file)
    # SIGTERM ends the client cleanly: the cluster is closed and the manifest kept.
    signal.signal(signal.SIGTERM, _stop)
    # --threads-per-worker and --force: earlier names, kept so that scripts still run.
    if workers_old is not None:
        warn_legacy("--threads-per-worker", "--workers")
    if overwrite_old:
        warn_legacy("--force", "--overwrite")
    workers = workers_old or workers
    if threads is not None and jobs is None:   # the budget shared by the scenes at once
        jobs = max(1, threads // workers)
    options = BatchOptions(build_predict_options(predict, workers=workers, overwrite=True,
                                                 progress=False), device=device)
    summary = run_batch(paths, model_dir, output, jobs=jobs, scheduler=scheduler,
                        overwrite=overwrite or overwrite_old, options=options,
                        progress=not quiet, mosaic=vrt,
                        echo=lambda m: click.echo(m, err=True))
    width = max([len(str(p)) for p in paths] + [5])
    click.echo(f"{'scene':<{width}}  status   seconds  note")
    for s in summary.skipped:
        click.echo(f"{s:<{width}}  skipped        -  done before (same model and input)")
    for r in summary.records:
        note = r.get("reason", "")
        click.echo(f"{r['scene']:<{width}}  {r['status']:<7} {r.get('seconds', 0):8.1f}  {note}")
    if summary.records:
        rate = summary.pixels / max(summary.seconds, 1e-9)
        click.echo(f"{len(summary.records) - len(summary.failed)} done, "
                   f"{len(summary.failed)} failed, {len(summary.skipped)} skipped; "
                   f"{summary.pixels} px in {summary.seconds:.1f} s ({rate:,.0f} px/s)")
    if summary.mosaic is not None:
        click.echo(f"mosaic: {summary.mosaic}")
    if summary.failed:
        sys.exit(1)
