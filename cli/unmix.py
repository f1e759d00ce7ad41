"""``hsimap unmix``: abundances and endmembers without labels."""

from __future__ import annotations

import click

from hsimap.cli.options import (
    PRECISION_HELP,
    at_least_one,
    cog_opt,
    creation_opt,
    device_opt,
    halo_opt,
    mask_opt,
    name_library_opt,
    no_quicklooks_opt,
    output_opt,
    overwrite_opt,
    precision_opt,
    quiet_opt,
    scene_arg,
    seed_opt,
    stac_opt,
    thread_limit,
    threads_opt,
    variable_opt,
    window_opt,
    workers_opt,
)


@click.command("unmix")
@scene_arg
@output_opt("Folder for the scene's outputs (created if missing).")
@click.option("-p", "--endmembers", type=int, default=4, show_default=True,
              help="Number of endmembers (pure materials, P) to find (ignored with --library).")
@click.option("--method", type=click.Choice(["hsimap", "vca-fcls"]), default="hsimap",
              show_default=True, help="The unmixing network, or the classic VCA + FCLS.")
@click.option("--extraction", type=click.Choice(["purified", "vca", "vca-affine"]),
              default=None,
              help="Starting endmembers: VCA on 3x3-smoothed pixels then moved to the typical "
                   "spectrum of the pixels nearly pure in each (default for hsimap), textbook "
                   "VCA (default for vca-fcls), or VCA forced onto its affine projection.")
@click.option("--solver", type=click.Choice(["sclsu", "fcls", "network"]), default=None,
              help="How each pixel's abundances are solved with the endmembers: SCLSU, a "
                   "mixture with a brightness of its own per pixel (default for hsimap), FCLS "
                   "(default for vca-fcls), or the network's own abundance encoder (hsimap only).")
@click.option("--library", type=click.Path(exists=True), default=None,
              help="Start from this spectral library (.sli or .csv) instead of extracting.")
@click.option("--fixed-library", is_flag=True, help="Keep the library's spectra fixed.")
@name_library_opt
@click.option("--epochs", type=int, callback=at_least_one, default=300, show_default=True,
              help="Training rounds of the unmixing network (method hsimap), each on up to 16 "
                   "of the scene's windows.")
@window_opt(128)
@halo_opt(16)
@variable_opt
@mask_opt
@seed_opt
@workers_opt
@threads_opt
@device_opt
@precision_opt("auto", PRECISION_HELP + " Here: the network's abundance pass (--solver "
               "network); fitting runs in fp32.")
@cog_opt
@creation_opt
@stac_opt
@no_quicklooks_opt
@overwrite_opt
@quiet_opt
def command(scene, output, endmembers, method, extraction, solver, library, fixed_library,
            name_library, epochs, window, halo, variable, mask, seed, workers, threads, device,
            precision, cog, creation_options, stac, no_quicklooks, overwrite, quiet) -> None:
    """Unmix SCENE without labels: SCENE_abundances.tif, SCENE_error.tif and the endmember
    library SCENE_endmembers.sli/.hdr/.csv, on the scene's grid, plus quicklooks."""
    from hsimap.products import OutputOptions

    out = OutputOptions(workers=workers or threads, cog=cog, creation_options=creation_options,
                        overwrite=overwrite, quicklooks=not no_quicklooks, progress=not quiet,
                        stac=stac)
    out.check()   # before torch is imported: a refused option is said in a second, not three
    from hsimap.io.scene import open_scene
    from hsimap.model.store import resolve_device
    from hsimap.workflows.unmix import UnmixOptions, unmix

    opts = UnmixOptions(endmembers=endmembers, method=method, extraction=extraction, solver=solver,
                        library=library, fixed_library=fixed_library,
                        name_library=name_library, epochs=epochs,
                        window=window, halo=halo, seed=seed,
                        device=str(resolve_device(device)), precision=precision, output=out)
    data = open_scene(scene, variable=variable, mask=mask)
    with thread_limit(threads):
        result = unmix(data, output, opts)
    click.echo(f"unmixed in {result.seconds:.1f} s")
    for key, path in result.paths.items():
        click.echo(f"{key:>15}: {path}")
