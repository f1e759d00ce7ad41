"""Unsupervised unmixing of a scene: the unmixing branch alone, or VCA + FCLS.

``hsimap unmix`` needs no labels. The network is the classifier's unmixing branch (patch
embedding, unmixing gate, abundance encoder, endmember bank with per-pixel variants), trained on
the scene's windows with the spectral-angle reconstruction loss and the L1/2 sparsity term; it
refines the endmembers. The abundances are then solved per pixel with them (``solver``):
SCLSU by default (a mixture with a free brightness per pixel, :func:`hsimap.model.vca.sclsu`),
FCLS, or the network's own encoder. The classic baseline (``method="vca-fcls"``) extracts
endmembers with VCA and solves fully constrained least squares per pixel. Both write their
products through the same engine as ``predict``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from hsimap.engine import check_workers, scene_tiles, tile_array
from hsimap.errors import HsimapError
from hsimap.inference import Scaling, apply_window
from hsimap.io.files import output_folder, output_stem
from hsimap.io.scene import read_window, usable_bands
from hsimap.io.speclib import envi_safe_name, read_library
from hsimap.model.losses import make_optimizer, sad_loss, sparsity_loss
from hsimap.model.naming import endmember_names
from hsimap.model.network import ModelConfig, UnmixingNetwork
from hsimap.model.precision import resolve_precision, set_precision
from hsimap.model.vca import SOLVERS, VCA_SAMPLE, mixture, purify, spectral_angle, vca_best
from hsimap.products import (
    EndmemberLibrary,
    OutputOptions,
    provenance,
    refuse_existing,
    write_products,
)
from hsimap.progress import TileProgress
from hsimap.runtime import check_precision
from hsimap.windows import SceneScan, Tile, dead_bands, scan_scene

METHODS = ("hsimap", "vca-fcls")
EXTRACTIONS = ("purified", "vca", "vca-affine")
ABUNDANCE_SOLVERS = (*SOLVERS, "network")   # the per-pixel solvers, or the network's encoder
RASTERS = ("abundances", "error")


@dataclass
class UnmixOptions:
    """What ``hsimap unmix`` can be told."""

    endmembers: int = 4
    method: str = "hsimap"
    library: str | Path | None = None     # start from these spectra instead of extracting
    name_library: str | Path | None = None  # names extracted endmembers (None: embedded USGS)
    fixed_library: bool = False
    extraction: str | None = None         # default: purified (hsimap), vca (vca-fcls)
    solver: str | None = None             # abundances; default: sclsu (hsimap), fcls (vca-fcls)
    epochs: int = 300
    window: int = 128
    halo: int = 16
    hidden: int = 64
    variants: int = 10
    lr: float = 3e-3
    endmember_lr: float = 1e-5
    sparsity_weight: float = 0.001
    mse_weight: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"               # of the abundance pass (fitting stays float32)
    output: OutputOptions = field(default_factory=OutputOptions)

    def check(self) -> None:
        """Refuse settings that cannot run, in one line each."""
        if self.method not in METHODS:
            raise HsimapError(f"unknown method {self.method!r} (hsimap or vca-fcls)")
        if self.solver is not None and self.solver not in ABUNDANCE_SOLVERS:
            raise HsimapError(f"unknown solver {self.solver!r} (one of "
                              f"{', '.join(ABUNDANCE_SOLVERS)})")
        if self.solver == "network" and self.method != "hsimap":
            raise HsimapError("--solver network needs --method hsimap (the network's own "
                              "abundances)")
        if self.extraction is not None and self.extraction not in EXTRACTIONS:
            raise HsimapError(f"unknown extraction {self.extraction!r} (purified, vca or "
                              "vca-affine)")
        for name in ("endmembers", "epochs", "hidden", "variants"):
            if getattr(self, name) < 1:
                raise HsimapError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise HsimapError(f"--seed must be non-negative, got {self.seed}")
        check_precision(self.precision)
        if self.fixed_library and self.library is None:
            raise HsimapError("--fixed-library needs --library")
        check_workers(self.output.workers)

    @classmethod
    def of(cls, opts: UnmixOptions | None = None, **settings: object) -> UnmixOptions:
        """``opts`` (or the defaults) with ``settings`` applied; output settings (``workers``,
        ``cog``, ``overwrite``, ...) go to :attr:`output`."""
        base = opts or cls()
        out_names = {f.name for f in fields(OutputOptions)}
        own = {k: v for k, v in settings.items() if k not in out_names}
        out = {k: v for k, v in settings.items() if k in out_names}
        return replace(base, **own, output=replace(base.output, **out))


@dataclass
class UnmixResult:
    endmembers: np.ndarray        # (P, bands used) in the scene's units
    names: list[str]
    wavelengths: np.ndarray | None
    paths: dict[str, Path]
    seconds: float


def _initial_library(scene, scan, bands, p, library, seed, extraction="purified"):
    """(P, bands) starting endmembers and their names: a user library, or extracted.

    ``extraction``: "vca" is the textbook VCA (10 restarts, largest volume) on the pixels as
    read, "vca-affine" the same forced onto VCA's affine branch; "purified" runs the affine
    branch on 3 x 3-smoothed pixels and then :func:`~hsimap.model.vca.purify` on the pixels as
    read."""
    if library is not None:
        spectra, names, wl = read_library(library)
        scene_wl = scene.coords["wavelength"].values[bands]
        both = wl is not None and len(wl) == spectra.shape[1] and \
            bool(np.all(np.isfinite(scene_wl)))
        # The library's own wavelengths decide which value is which band, also where its band
        # count happens to equal the scene's (a library in another band order, or sensor).
        elsewhere = both and (len(wl) != len(scene_wl) or
                              not np.allclose(np.asarray(wl, float), scene_wl, atol=5.0))
        if spectra.shape[1] != len(bands) or elsewhere:
            if wl is None or not np.all(np.isfinite(scene_wl)):
                raise HsimapError(f"{library}: {spectra.shape[1]} bands, the scene uses "
                                  f"{len(bands)}, and wavelengths are missing to resample")
            lo, hi = float(np.min(wl)), float(np.max(wl))
            # Beyond its range np.interp would repeat the library's end values: refuse.
            if scene_wl.min() < lo - 5 or scene_wl.max() > hi + 5:
                raise HsimapError(f"{library}: covers {lo:.0f}-{hi:.0f} nm, the scene's used "
                                  f"bands span {scene_wl.min():.0f}-{scene_wl.max():.0f} nm; "
                                  "use a library that covers the scene, or mark the other "
                                  "bands bad")
            order = np.argsort(wl)
            spectra = np.array([np.interp(scene_wl, wl[order], s[order]) for s in spectra])
        dark = [str(n) for n, s in zip(names, spectra, strict=True) if not np.any(s > 0)]
        if dark:
            raise HsimapError(f"{library}: spectrum {dark[0]!r} has no positive value; "
                              "reflectance spectra are positive")
        _check_library_scale(library, spectra, scan.raw)
        return spectra.astype(np.float32), [envi_safe_name(n) for n in names]
    raw, smooth = scan.raw, scan.smooth
    if len(raw) < p:
        raise HsimapError(f"only {len(raw)} valid pixels, fewer than {p} endmembers")
    names = [f"endmember {i + 1}" for i in range(p)]
    if extraction in ("vca", "vca-affine"):
        projection = "auto" if extraction == "vca" else "affine"
        return vca_best(raw, p, seed=seed, projection=projection), names
    start = vca_best(smooth, p, seed=seed, projection="affine")
    return purify(raw, start), names


# Spectra of one scale differ in brightness by far less than this; reflectance x 10,000 against
# 0-1 is a factor of 10,000 (the same limit predict uses for scenes against their model).
LIBRARY_SCALE_LIMIT = 10.0


def _check_library_scale(library: object, spectra: np.ndarray, pixels: np.ndarray) -> None:
    """Refuse a library on another scale than the scene's pixels: abundances would still sum
    to one while the reconstruction missed the pixels by the ratio."""
    if not len(pixels):
        return
    lib = float(np.median(np.abs(spectra)))
    px = float(np.median(np.abs(pixels)))
    if lib <= 0 or px <= 0:
        return
    ratio = lib / px
    if not 1 / LIBRARY_SCALE_LIMIT <= ratio <= LIBRARY_SCALE_LIMIT:
        raise HsimapError(f"{library}: its spectra are about {ratio:.3g} times the scene's "
                          f"pixels (median {lib:.4g} against {px:.4g}): another scale "
                          "(reflectance x 10,000?); scale the library or the scene to match")


def unmix(scene: xr.DataArray, out_dir: str | Path, opts: UnmixOptions | None = None, *,
          stem: str | None = None, **settings: object) -> UnmixResult:
    """Unmix a scene and write abundances, reconstruction error and the endmember library.

    Settings come as ``opts`` and/or keywords (``unmix(scene, out, endmembers=5, cog=True)``),
    see :class:`UnmixOptions`. ``extraction`` picks the starting endmembers when no
    ``library`` is given (see :func:`_initial_library`)."""
    t0 = time.perf_counter()
    opts = UnmixOptions.of(opts, **settings)
    opts.check()
    torch.manual_seed(opts.seed)
    stem = stem or output_stem(scene.attrs.get("source", "scene"))
    out = opts.output
    refuse_existing(out_dir, stem, out.overwrite)
    out.check()
    grid = scene_tiles(scene, opts.window, opts.halo)
    with output_folder(out_dir):
        spectra, names, wl, written = _unmix_into(scene, out_dir, stem, grid, opts)
    return UnmixResult(spectra, names, wl, written, time.perf_counter() - t0)


def _unmix_into(scene: xr.DataArray, out_dir: str | Path, stem: str, grid: list[Tile],
                opts: UnmixOptions) -> tuple[np.ndarray, list[str], np.ndarray | None,
                                             dict[str, Path]]:
    """Extract (and fit), then write the products: spectra, names, wavelengths, paths."""
    out = opts.output
    bands = usable_bands(scene)
    bands = bands[~dead_bands(scene, grid, bands)]
    if not len(bands):
        raise HsimapError("no band holds data over the scene")
    if opts.library is None and opts.endmembers is not None and opts.endmembers > len(bands):
        raise HsimapError(f"-p {opts.endmembers}: the scene has {len(bands)} usable bands, and "
                          "a linear mixture can have at most as many endmembers as bands")
    extraction = opts.extraction or ("purified" if opts.method == "hsimap" else "vca")
    scan = scan_scene(scene, grid, bands, VCA_SAMPLE, opts.seed,
                      smoothed=opts.library is None and extraction == "purified")
    init, names = _initial_library(scene, scan, bands, opts.endmembers, opts.library,
                                   opts.seed, extraction)
    if len(bands) < len(init):
        raise HsimapError(f"{len(bands)} usable bands, fewer than {len(init)} endmembers")
    precision = None
    solver = opts.solver or ("sclsu" if opts.method == "hsimap" else "fcls")
    if opts.method == "vca-fcls":
        spectra = init
    else:
        net = _train_network(scene, scan, bands, init, opts)
        spectra = net.unmixing.mean_endmembers().detach().cpu().numpy() \
            * (scan.hi - scan.lo) + scan.lo
    if solver == "network":
        precision = resolve_precision(opts.precision, opts.device)
        set_precision(net, precision)
        run = _network_window(net, Scaling(bands, scan.lo, scan.hi), opts.device)
    else:
        run = _solver_window(spectra, bands, solver)
    p = len(init)
    bar = TileProgress(scene, "unmix", out.progress)
    stack = tile_array(scene, grid, run, p + 1, name=f"unmix-{id(run)}", on_tile=bar.on_tile,
                       serialize=torch.device(opts.device).type == "cuda", valid_bands=bands)
    wl = scene.coords["wavelength"].values[bands]
    wl = wl if np.all(np.isfinite(wl)) else None
    if opts.library is None:
        names = endmember_names(spectra, wl, opts.name_library)
    library = EndmemberLibrary(spectra, names, wl, f"hsimap unmix ({opts.method}) of {stem}")
    out = replace(out, provenance=provenance(scene, method=opts.method, endmembers=p,
                                             solver=solver, precision=precision))
    written = write_products(scene, out_dir, stem, {"abundances": stack[:p], "error": stack[p]},
                             library, bar, out)
    return spectra, names, wl, written


def _error_plane(recon: np.ndarray, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(1, h, w) spectral angle between reconstruction and pixel, physical units, NaN where
    invalid."""
    err = spectral_angle(np.moveaxis(recon, 0, -1), np.moveaxis(x, 0, -1)).astype(np.float32)
    err[~valid] = np.nan
    return err[None]


def _solver_window(init: np.ndarray, bands: np.ndarray, solver: str):
    """The per-window function of a per-pixel solver (``fcls``, ``sclsu``) with fixed
    endmembers: abundances and error planes. The error is an angle, which SCLSU's brightness
    leaves unchanged."""
    p, solve = len(init), SOLVERS[solver]

    def run(values: np.ndarray, valid: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        x = values[bands]
        a = np.full((p, *valid.shape), np.nan, np.float32)
        if valid.any():
            a[:, valid] = solve(x[:, valid].T, init).T
        recon = mixture(np.nan_to_num(a).reshape(p, -1).T, init, solver).T
        return np.concatenate([a, _error_plane(recon.reshape(x.shape), x, valid)])
    return run


def _network_window(net: UnmixingNetwork, scaling: Scaling, device: str):
    """The per-window function of the unmixing network: abundances and error planes."""
    net.to(torch.device(device))

    def run(values: np.ndarray, valid: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        applied = apply_window(net, scaling, [(values, valid, origin)], device)
        return np.concatenate([applied.abundances[0], applied.error])
    return run


# Windows held in memory for fitting: all of a small scene; of a large one, this many drawn
# evenly, so memory is bounded by the window size, never the scene's (64 windows of
# 144 x 144 px x 200 bands are 1 GiB).
MAX_FIT_WINDOWS = 64


def _fit_windows(scene: xr.DataArray, scan: SceneScan, bands: np.ndarray, seed: int
                 ) -> list[tuple[Tile, torch.Tensor, torch.Tensor]]:
    """The windows fitting sees, scaled and filled: all of a small scene's, or
    :data:`MAX_FIT_WINDOWS` drawn evenly from a large one's."""
    # The windows are read in ``bands`` only: their scaling reads every band it is given.
    scaling = Scaling(np.arange(len(bands)), scan.lo, scan.hi)
    usable = scan.usable
    if len(usable) > MAX_FIT_WINDOWS:
        rng = np.random.default_rng(seed)
        usable = [usable[i] for i in sorted(rng.choice(len(usable), MAX_FIT_WINDOWS,
                                                       replace=False))]
    windows = []
    for t in usable:
        values, valid = read_window(scene, t.rows, t.cols, bands)
        windows.append((t, torch.from_numpy(scaling.input(values, valid))[None],
                        torch.from_numpy(valid)))
    return windows


def _train_network(scene: xr.DataArray, scan: SceneScan, bands: np.ndarray, init: np.ndarray,
                   opts: UnmixOptions) -> UnmixingNetwork:
    """Fit the unmixing network on the scene's windows, a few per step."""
    lo, hi = scan.lo, scan.hi
    windows = _fit_windows(scene, scan, bands, opts.seed)
    cfg = ModelConfig(bands=len(bands), classes=1, endmembers=len(init),
                      variants=opts.variants, hidden=opts.hidden, coord_period=opts.window)
    net = UnmixingNetwork(cfg)
    net.unmixing.init_endmembers(torch.from_numpy((init - lo) / (hi - lo)))
    if opts.fixed_library:
        net.unmixing.endmembers.requires_grad_(False)
    # The endmember rate is slow on purpose: free endmembers under the angle loss drift toward
    # the scene's dominant spectra (the dark water endmember of Jasper Ridge moved 2 to 6 deg
    # in 60 epochs at 1e-4), so the extracted spectra are kept nearly as they are and the
    # per-pixel variants carry the variability. Per-parameter Adam (not fused): fused updates
    # round differently, and unmix's fitted abundances would move by up to 0.009 from the
    # figures in docs/benchmarks.md for no gain at this network's size.
    optim, sched = make_optimizer(net, lr=opts.lr, steps=opts.epochs,
                                  endmember_lr=None if opts.fixed_library else opts.endmember_lr,
                                  fused=False)
    # Large scenes: a bounded number of windows per epoch keeps an epoch's cost fixed.
    per_epoch = min(len(windows), 16)
    gen = torch.Generator().manual_seed(opts.seed)
    bar = tqdm(range(opts.epochs), desc="fit", unit="epoch", disable=not opts.output.progress)
    for _ in bar:
        net.train()
        pick = torch.randperm(len(windows), generator=gen)[:per_epoch].tolist()
        for k in pick:
            t, x, v = windows[k]
            a, recon = net(x, v, (t.row, t.col))
            # The angle term fits spectral shape; the squared error ties the amplitude of the
            # reconstruction to the data, which the angle alone leaves free.
            mse = ((recon - x) ** 2)[0][:, v].mean()
            loss = sad_loss(recon, x, v) + opts.mse_weight * mse + \
                opts.sparsity_weight * sparsity_loss(a, v)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if not opts.fixed_library:
                with torch.no_grad():  # reflectance is non-negative: 0 is -lo/(hi-lo) here
                    net.unmixing.endmembers.clamp_(min=-lo / (hi - lo))
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    net.eval()
    return net
