"""Predicting a scene to its output set: the one predict workflow, for ``hsimap predict``,
``hsimap batch`` (each worker runs it unchanged) and Python users.

:class:`PredictOptions` holds what a prediction needs beyond the scene and the model; its
:class:`~hsimap.products.OutputOptions` how the products are written. :func:`predict_scene`
checks everything that can be checked before any computation, then streams the scene's
windows through the model into the set (:func:`hsimap.products.write_products`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import xarray as xr

from hsimap.inference import predict, prepare
from hsimap.io.files import output_folder, output_stem
from hsimap.io.probabilities import encode as encode_probabilities
from hsimap.model.store import TrainedModel
from hsimap.products import (
    DEFAULT_RASTERS,
    PROBABILITIES_UINT8,
    UNMIXING_RASTERS,
    EndmemberLibrary,
    OutputOptions,
    provenance,
    refuse_existing,
    write_products,
)
from hsimap.progress import TileProgress
from hsimap.workflows.options import PredictOptions


@dataclass
class PredictReport:
    paths: dict[str, Path]
    pixels: int
    seconds: float
    windows: int


def predict_scene(scene: xr.DataArray, model: TrainedModel, out_dir: str | Path,
                  opts: PredictOptions | None = None, *, stem: str | None = None
                  ) -> PredictReport:
    """Predict ``scene`` and write its output set into ``out_dir``, streaming window by window.

    Memory is bounded by the window size and ``opts.output.workers``: each tile's results go
    straight to the (temporary) output files, which appear under their names only once all
    are complete. ``opts.output.mmu``: minimum mapping unit, pixels; smaller patches of the
    class map take the class of their largest neighbour (GDAL's sieve, 8-connected).
    """
    opts = opts or PredictOptions()
    t0 = time.perf_counter()
    opts.check()
    # Every check of the scene against the model, once, before any output exists.
    grid = prepare(scene, model, window=opts.window, halo=opts.halo,
                   ignore_wavelengths=opts.ignore_wavelengths, ignore_scale=opts.ignore_scale)
    precision = model.use_precision(opts.precision)
    out = replace(opts.output, provenance={
        **provenance(scene, model_hash=model.card.model_hash, model_created=model.card.created,
                     classifier=model.card.baseline or "mamba", precision=precision,
                     mmu_pixels=opts.output.mmu or None),
        **(opts.output.provenance or {})})
    stem = stem or output_stem(scene.attrs.get("source", "scene"))
    refuse_existing(out_dir, stem, out.overwrite)
    with output_folder(out_dir):
        bar = TileProgress(scene, stem, out.progress)
        ds = predict(scene, model, window=opts.window, halo=opts.halo, on_tile=bar.on_tile,
                     grid=grid, probabilities=opts.probabilities is not None)
        library = None
        if model.unmixes:
            spectra, wl = model.endmember_spectra()
            library = EndmemberLibrary(spectra, model.endmember_names, wl,
                                       f"hsimap endmembers of {stem}")
        # An SVM or forest alone classifies: no abundances, errors or endmembers to write.
        rasters = {k: ds[k].data for k in DEFAULT_RASTERS
                   if model.unmixes or k not in UNMIXING_RASTERS}
        products = {}
        if opts.probabilities is not None:
            if opts.probabilities == "uint8":
                products["probabilities"] = PROBABILITIES_UINT8
            rasters["probabilities"] = encode_probabilities(ds["probabilities"].data,
                                                            opts.probabilities)
        written = write_products(scene, out_dir, stem, rasters, library, bar, out,
                                 class_table=model.class_table, products=products)
    return PredictReport(written, bar.total, time.perf_counter() - t0, bar.tiles)


def write_outputs(scene: xr.DataArray, model: TrainedModel, out_dir: str | Path, *,
                  window: int | None = None, halo: int | None = None,
                  workers: int | None = None, cog: bool = False, overwrite: bool = False,
                  creation_options: dict[str, str] | None = None, progress: bool = True,
                  quicklooks: bool = True, ignore_wavelengths: bool = False,
                  ignore_scale: bool = False, mmu: int = 0, stac: bool = False,
                  probabilities: str | None = None, stem: str | None = None,
                  precision: str = "auto") -> PredictReport:
    """:func:`predict_scene` with its options as keywords (the form of hsimap 0.1's API)."""
    out = OutputOptions(workers=workers, cog=cog, creation_options=creation_options,
                        overwrite=overwrite, quicklooks=quicklooks, progress=progress, mmu=mmu,
                        stac=stac)
    return predict_scene(scene, model, out_dir,
                         PredictOptions(window=window, halo=halo,
                                        ignore_wavelengths=ignore_wavelengths,
                                        ignore_scale=ignore_scale, probabilities=probabilities,
                                        precision=precision, output=out), stem=stem)
