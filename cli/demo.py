"""``hsimap demo``: the whole job on an embedded synthetic scene, no download."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    legacy,
    output_opt,
    quiet_opt,
    thread_limit,
    threads_opt,
    warn_legacy,
)


@click.command("demo")
@output_opt("Folder for the demo's files (replaced on every run).", default="demo-output")
@click.option("--overwrite", is_flag=True, hidden=True,
              help=legacy("demo --overwrite", "demo (it always replaces its own folder)"))
@click.option("--quick", is_flag=True, help="A smaller scene and fewer steps (tests).")
@threads_opt
@quiet_opt
def command(output, overwrite, quick, threads, quiet) -> None:
    """Synthesize a georeferenced scene from embedded USGS spectra, train a model on a few
    labelled pixels per class, predict the whole scene in streaming windows, evaluate."""
    from hsimap.workflows.demo import DemoSettings, run_demo

    if overwrite:
        warn_legacy("demo --overwrite", "demo (it always replaces its own folder)")
    settings = DemoSettings()
    if quick:
        settings = DemoSettings(width=128, height=96, bands=24, steps=20, hidden=32, window=32,
                                halo=4, crop=64, train_per_class=10, region_size=20)
    with thread_limit(threads):
        r = run_demo(output, settings, progress=not quiet)
    m = r.metrics
    click.echo("")
    click.echo("hsimap demo: synthetic scene -> train -> predict -> evaluate")
    for name, path in r.files.items():
        click.echo(f"  {name:>17}: {path}")
    click.echo(f"classification (labelled pixels outside the training area, {m.pixels}):"
               f" OA {m.overall_accuracy:.3f}  "
               f"kappa {m.kappa:.3f}  AA {m.average_accuracy:.3f}")
    click.echo(f"unmixing vs the true abundances: RMSE {r.abundance_rmse:.3f}; learned "
               f"endmembers vs true spectra: mean SAD {r.endmember_sad_deg:.1f} deg")
    if r.endmember_sad_deg > 5:
        # Say why, rather than print a number that reads like a result.
        click.echo(f"  the learned endmembers are not the demo's materials: no pixel of this "
                   f"scene is purer than {100 * max(r.purest):.0f}% of any material (the least "
                   f"pure reaches {100 * min(r.purest):.0f}%), and the model starts its "
                   "endmembers from the scene's purest pixels (VCA). Its abundances say which "
                   "learned spectrum dominates where; for the materials themselves give "
                   "`hsimap unmix --method vca-fcls --library` their spectra.")
    t = r.seconds
    click.echo(f"time: synth {t['synth']:.1f} s, train {t['train']:.1f} s, "
               f"predict {t['predict']:.1f} s")
    click.echo(f"open {r.files['classes']} in QGIS: it carries the scene's CRS and colours.")
