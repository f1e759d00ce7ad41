"""``hsimap train``: fit the unmixing-guided Mamba to a scene and its labels."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    PRECISION_HELP,
    at_least_one,
    class_field_opt,
    device_opt,
    existing_all,
    halo_opt,
    label_variable_opt,
    labels_opt,
    legacy,
    mask_opt,
    name_library_opt,
    output_opt,
    overwrite_opt,
    precision_opt,
    quiet_opt,
    seed_opt,
    threads_opt,
    variable_opt,
    warn_legacy,
    window_opt,
)


@click.command("train")
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...", callback=existing_all)
@labels_opt("Class raster (0 = unlabelled), vector file (polygons/points) or .mat; one per "
            "scene, in order, or one vector file for all scenes.", multiple=True)
@output_opt("Model folder to write.")
@class_field_opt
@click.option("--classes", "classes_csv", type=click.Path(exists=True), default=None,
              help="CSV of id,name,color giving class names and colours.")
@label_variable_opt
@click.option("--train-per-class", type=int, callback=at_least_one, default=30, show_default=True,
              help="Labelled pixels per class to train on (classes with that many or fewer: 5).")
@click.option("--val-per-class", type=int, callback=at_least_one, default=10, show_default=True,
              help="Labelled pixels per class held out to pick the best step (validation).")
@click.option("--train-fraction", type=float, default=None,
              help="Train on this fraction of each class instead of a fixed count.")
@click.option("--steps", type=int, callback=at_least_one, default=300, show_default=True,
              help="Optimiser steps, each on a mini-batch of --batch chips.")
@click.option("--epochs", type=int, callback=at_least_one, default=None, hidden=True,
              help=legacy("--epochs", "--steps"))
@click.option("--batch", type=int, callback=at_least_one, default=4, show_default=True,
              help="Chips (training windows holding labels) per step.")
@click.option("--endmembers", type=int, default=None,
              help="Number of endmembers (pure materials) the unmixing branch learns (P; "
                   "default: classes + 2, at least 4).")
@click.option("--variants", type=int, callback=at_least_one, default=10, show_default=True,
              help="Spectral variants of each endmember, for materials whose spectrum "
                   "varies across the scene (R).")
@click.option("--hidden", type=int, callback=at_least_one, default=128, show_default=True,
              help="Width of the network's feature vectors (D): larger learns more, "
                   "runs slower.")
@window_opt(64, "Window size, px: the training chip and the prediction window.")
@halo_opt(8)
@click.option("--val-every", type=int, callback=at_least_one, default=25, show_default=True,
              help="Score the validation pixels every this many steps; the best step is kept.")
@click.option("--patience", type=int, default=3, show_default=True,
              help="Stop when this many validations in a row have not raised the validation "
                   "OA (the best state is kept); 0 runs every step.")
@click.option("--test-all", is_flag=True,
              help="Score every test pixel (default: a class-stratified sample of at most "
                   "50,000 px in at most 256 windows).")
@click.option("--tokens", type=click.Choice(["cluster", "raster"]), default="cluster",
              show_default=True, help="Ablation: raster order instead of cluster tokens.")
@click.option("--no-unmixing", is_flag=True,
              help="Ablation: no unmixing losses and no abundance-guided tokens.")
@click.option("--classifier", type=click.Choice(["mamba", "svm", "rf", "auto"]),
              default="mamba", show_default=True,
              help="What gives the classes: the unmixing-guided Mamba; an RBF SVM or a random "
                   "forest alone (fast, no abundances); or auto: all three, keeping the Mamba "
                   "unless a baseline's validation OA is higher by more than one binomial "
                   "standard error of the Mamba's (then that baseline; the Mamba's abundances "
                   "beside it).")
@name_library_opt
@threads_opt
@variable_opt
@mask_opt
@device_opt
@precision_opt("fp32", PRECISION_HELP + " Here: the training steps; fp32 by default, as "
               "bf16 training's accuracy is not measured.")
@seed_opt
@overwrite_opt
@quiet_opt
def command(scenes, labels, output, class_field, classes_csv, label_variable, train_per_class,
            val_per_class, train_fraction, steps, epochs, batch, endmembers, variants, hidden,
            window, halo, val_every, patience, test_all, tokens, no_unmixing, classifier,
            name_library, threads, variable, mask, device, precision, seed, overwrite,
            quiet) -> None:
    """Train a model on one or more SCENEs with their LABELS; write it to a folder.

    Several scenes (flight lines of one sensor) train one model: give one -l per scene, in
    the same order, or a single vector file whose polygons each scene takes where they fall
    on it. One split and one scaling cover all scenes.

    The folder holds model.safetensors (weights), model.json (the model card: classes,
    bands, scaling, metrics, scenes), history.csv and split.tif (1 train, 2 validation,
    3 test), or split_<scene>.tif per scene. With --classifier svm, rf or auto it may also
    hold classifier.safetensors (the baseline's arrays; never a pickle).
    """
    from hsimap.errors import HsimapError
    from hsimap.workflows.train_options import TrainOptions, pair_labels

    try:  # a count of arguments that do not pair is a usage error, said before anything runs
        pair_labels(scenes, labels, what="-l")
    except HsimapError as exc:
        raise click.UsageError(str(exc)) from None

    if epochs is not None:
        warn_legacy("--epochs", f"--steps (read as --steps {epochs}: training counts steps of "
                    "--batch chips since 0.2)")
        steps = epochs
    opts = TrainOptions(steps=steps, batch=batch, test_all=test_all, endmembers=endmembers,
                        variants=variants, hidden=hidden, window=window, halo=halo,
                        val_every=val_every, patience=patience,
                        train_per_class=train_per_class, val_per_class=val_per_class,
                        train_fraction=train_fraction, tokens=tokens, unmixing=not no_unmixing,
                        classifier=classifier,
                        seed=seed, device=device, precision=precision,
                        threads=threads,
                        name_library=name_library, progress=not quiet)
    opts.check()   # before torch is imported: a refused option is said in a second, not three
    from hsimap.model.store import resolve_device
    from hsimap.workflows.train import train_from_files

    opts.device = str(resolve_device(device))
    result = train_from_files(scenes, labels, output, opts, class_field=class_field,
                              classes_csv=classes_csv, variable=variable, mask=mask,
                              label_variable=label_variable, overwrite=overwrite)
    out = output
    excluded = result.model.card.excluded_bands
    if excluded:
        click.echo(f"excluded {len(excluded)} band(s) with no data, or one value, over the "
                   f"scene: {', '.join(str(b + 1) for b in excluded)} (1-based)")
    v, t = result.val_metrics, result.test_metrics
    if result.model.network is not None:
        click.echo(f"model: {out} (best step {result.best_step}, "
                   f"{result.seconds:.0f} s, {result.seconds_per_step:.2f} s/step)")
    else:
        click.echo(f"model: {out} ({result.classifier}, {result.seconds:.0f} s)")
    if len(result.validation_oa) > 1:
        for kind, oa in sorted(result.validation_oa.items(), key=lambda kv: -kv[1]):
            mark = "  <- kept" if kind == result.classifier else ""
            click.echo(f"validation OA {kind:<5} {oa:.4f}{mark}")
        click.echo(f"classes from: {result.classifier}" + (
            " (abundances and endmembers from the Mamba)" if result.classifier != "mamba"
            else ""))
    else:
        click.echo(f"validation OA {v.overall_accuracy:.4f}")
    if t is not None:
        click.echo(f"test OA {t.overall_accuracy:.4f}  AA {t.average_accuracy:.4f}  "
                   f"kappa {t.kappa:.4f}  ({t.pixels} px"
                   + (", a class-stratified sample of "
                      f"{result.model.card.training.get('test_pixels_labelled', 0):,}; "
                      "--test-all for all)" if t.pixels < result.model.card.training.get(
                          "test_pixels_labelled", 0) else ", every test pixel)"))
        table = result.model.class_table
        width = max(len(n) for n in table.names)
        click.echo(f"{'class':<{width}}  producer's  user's      F1  (test pixels)")
        for c in t.class_ids:
            if c in t.producers_accuracy:
                ua = t.users_accuracy.get(c)
                ua_text = "-" if ua is None or ua != ua else f"{ua:.4f}"
                click.echo(f"{table.name_of(c):<{width}}  {t.producers_accuracy[c]:10.4f}  "
                           f"{ua_text:>6}  {t.f1[c]:6.4f}")
    names = result.model.card.endmember_names
    if names:
        click.echo(f"endmembers: {'; '.join(names)}")
    if result.stopped_early:
        from hsimap.errors import Interrupted

        steps = result.model.card.training.get("steps_run")
        raise Interrupted(f"interrupted at step {steps} of {opts.steps}: {out} holds the best "
                          f"model of the steps run (step {result.best_step})")
