"""Unsupervised unmixing of a scene: the unmixing branch alone, or VCA + FCLS.

``hsimap unmix`` needs no labels. The network is the classifier's unmixing branch (patch
embedding, unmixing gate, abundance encoder, endmember bank with per-pixel variants), trained on
the scene's windows with the spectral-angle reconstruction loss and the L1/2 sparsity term. The
classic baseline (``method="vca-fcls"``) extracts endmembers with VCA and solves fully constrained
least squares per pixel. Both write the same georeferenced outputs, window by window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.ndimage import uniform_filter
from torch import nn
from tqdm import tqdm

from hsimap.errors import HsimapError
from hsimap.inference import fill_invalid
from hsimap.io.scene import read_window
from hsimap.io.speclib import read_library, write_library
from hsimap.io.writers import Grid, RasterSink, check_output
from hsimap.model.network import CoordinateGate, ModelConfig, UnmixingBranch, coordinate_encoding
from hsimap.model.vca import fcls, purify, spectral_angle, vca_best
from hsimap.train import sad_loss, sparsity_loss
from hsimap.windows import Tile, tiles


class UnmixingNetwork(nn.Module):
    """The classifier's unmixing path on its own: embedding, gate, encoder, endmember bank."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.patch_embedding = nn.Sequential(
            nn.Conv2d(cfg.bands, d, 3, padding=1, padding_mode="replicate"),
            nn.BatchNorm2d(d), nn.GELU())
        self.unmixing_gate = CoordinateGate(d, "channel")
        self.unmixing = UnmixingBranch(cfg)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, origin: tuple[int, int]):
        _, _, h, w = x.shape
        coords = coordinate_encoding(origin[0], origin[1], h, w, self.cfg.coord_period,
                                     x.device)
        a, weights, recon = self.unmixing(self.unmixing_gate(self.patch_embedding(x), coords,
                                                             valid))
        return a * valid[None, None].to(a.dtype), recon


@dataclass
class UnmixResult:
    endmembers: np.ndarray        # (P, bands used) in the scene's units
    names: list[str]
    wavelengths: np.ndarray | None
    paths: dict[str, Path]
    seconds: float


def _smooth(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """3 x 3 mean over valid pixels: averages the noise down before the vertex search."""
    w = uniform_filter(valid.astype(np.float32), 3, mode="nearest")
    v = uniform_filter(values * valid, (1, 3, 3), mode="nearest")
    return v / np.maximum(w, 1e-6)


@dataclass
class _Scan:
    """What one streaming pass over the scene gathers before anything is fitted."""

    lo: float                  # global min and max of valid pixels, used bands
    hi: float
    raw: np.ndarray            # (n, bands) valid pixels drawn evenly over the scene
    smooth: np.ndarray | None  # the same pixels averaged over their 3 x 3 neighbourhood
    usable: list[Tile]         # windows holding valid pixels


def _scan(scene: xr.DataArray, grid: list[Tile], bands: np.ndarray, n: int, seed: int,
          smoothed: bool) -> _Scan:
    """Read every window once: value range, up to ``n`` sample pixels, also smoothed when
    ``smoothed`` (the halo makes the smoothing exact at window edges), and which windows have
    valid pixels."""
    rng = np.random.default_rng(seed)
    lo, hi = math.inf, -math.inf
    raw, smooth, usable = [], [], []
    share = min(1.0, 4.0 * n / max(1, sum(t.pixels for t in grid)))
    for t in grid:
        values, valid = read_window(scene, t.rows, t.cols, bands)
        if not valid.any():
            continue
        usable.append(t)
        v = values[:, valid]
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        rs, cs = t.core_in_read
        pick = valid[rs, cs] & (rng.random(valid[rs, cs].shape) < share)
        if pick.any():
            raw.append(values[:, rs, cs][:, pick].T)
            if smoothed:
                smooth.append(_smooth(values, valid)[:, rs, cs][:, pick].T)
    if not usable:
        raise HsimapError("the scene has no valid pixels")
    if not raw:  # valid pixels so sparse that the draw missed them all
        raw = smooth = [np.zeros((0, len(bands)), np.float32)]
    raw = np.concatenate(raw)
    smooth = np.concatenate(smooth) if smoothed else None
    if len(raw) > n:
        keep = rng.choice(len(raw), n, replace=False)
        raw = raw[keep]
        smooth = smooth[keep] if smoothed else None
    return _Scan(lo, max(hi, lo + 1e-6), raw, smooth, usable)


def _initial_library(scene, scan, bands, p, library, seed, extraction="purified"):
    """(P, bands) starting endmembers and their names: a user library, or extracted.

    ``extraction``: "vca" is the textbook VCA (10 restarts, largest volume) on the pixels as
    read, "vca-affine" the same forced onto VCA's affine branch; "purified" runs the affine
    branch on 3 x 3-smoothed pixels and then :func:`~hsimap.model.vca.purify` on the pixels as
    read."""
    if library is not None:
        spectra, names, wl = read_library(library)
        scene_wl = scene.coords["wavelength"].values[bands]
        if spectra.shape[1] != len(bands):
            if wl is None or not np.all(np.isfinite(scene_wl)):
                raise HsimapError(f"{library}: {spectra.shape[1]} bands, the scene uses "
                                  f"{len(bands)}, and wavelengths are missing to resample")
            spectra = np.array([np.interp(scene_wl, wl, s) for s in spectra])
        return spectra.astype(np.float32), [str(n) for n in names]
    raw, smooth = scan.raw, scan.smooth
    if len(raw) < p:
        raise HsimapError(f"only {len(raw)} valid pixels, fewer than {p} endmembers")
    names = [f"endmember {i + 1}" for i in range(p)]
    if extraction in ("vca", "vca-affine"):
        projection = "auto" if extraction == "vca" else "affine"
        return vca_best(raw, p, seed=seed, projection=projection), names
    start = vca_best(smooth, p, seed=seed, projection="affine")
    return purify(raw, start), names


def unmix(scene: xr.DataArray, out_dir: str | Path, *, endmembers: int = 4,
          method: str = "hsimap", library: str | Path | None = None,
          fixed_library: bool = False, extraction: str | None = None, epochs: int = 300,
          window: int = 128, halo: int = 16, hidden: int = 64, variants: int = 10,
          lr: float = 3e-3, endmember_lr: float = 1e-5,
          sparsity_weight: float = 0.001, mse_weight: float = 1.0, seed: int = 0,
          overwrite: bool = False, cog: bool = False, progress: bool = True,
          stem: str | None = None) -> UnmixResult:
    """Unmix a scene and write abundances, reconstruction error and the endmember library.

    ``extraction`` picks the starting endmembers when no ``library`` is given (see
    :func:`_initial_library`); by default "purified" for the network and the textbook "vca"
    for ``method="vca-fcls"``, the classic baseline."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or Path(scene.attrs.get("source", "scene")).stem
    paths = {"abundances": out / f"{stem}_abundances.tif", "error": out / f"{stem}_error.tif",
             "library_sli": out / f"{stem}_endmembers.sli",
             "abundances_png": out / f"{stem}_abundances.png",
             "endmembers_png": out / f"{stem}_endmembers.png"}
    for p in paths.values():
        check_output(p, overwrite)
    bands = np.flatnonzero(~scene.coords["bad_band"].values)
    height, width = scene.sizes["y"], scene.sizes["x"]
    grid = tiles(height, width, window, halo)
    if method not in ("hsimap", "vca-fcls"):
        raise HsimapError(f"unknown method {method!r} (hsimap or vca-fcls)")
    extraction = extraction or ("purified" if method == "hsimap" else "vca")
    if extraction not in ("purified", "vca", "vca-affine"):
        raise HsimapError(f"unknown extraction {extraction!r} (purified, vca or vca-affine)")
    scan = _scan(scene, grid, bands, 20000, seed,
                 smoothed=library is None and extraction == "purified")
    init, names = _initial_library(scene, scan, bands, endmembers, library, seed, extraction)
    p = len(init)
    if len(bands) < p:
        raise HsimapError(f"{len(bands)} usable bands, fewer than {p} endmembers")
    if method == "vca-fcls":
        def run(values, valid, origin):
            x = values[bands][:, valid].T
            a = np.full((p, *valid.shape), np.nan, np.float32)
            if len(x):
                a[:, valid] = fcls(x, init).T
            return a, np.einsum("phw,pb->bhw", np.nan_to_num(a), init)
        spectra = init
    else:
        net = _train_network(scene, scan, bands, init, p, epochs, window, hidden, variants,
                             lr, endmember_lr, sparsity_weight, mse_weight, fixed_library, seed,
                             progress)
        lo, hi = scan.lo, scan.hi

        @torch.no_grad()
        def run(values, valid, origin):
            x = fill_invalid((values[bands] - lo) / (hi - lo), valid).astype(np.float32)
            a, recon = net(torch.from_numpy(x)[None], torch.from_numpy(valid), origin)
            a = a[0].numpy()
            a[:, ~valid] = np.nan
            return a, recon[0].numpy() * (hi - lo) + lo
        spectra = net.unmixing.mean_endmembers().detach().numpy() * (hi - lo) + lo

    g = Grid.from_scene(scene)
    with RasterSink(paths["abundances"], g, p, "float32", nodata=float("nan"),
                    descriptions=names, cog=cog, overwrite=overwrite) as ab, \
            RasterSink(paths["error"], g, 1, "float32", nodata=float("nan"), cog=cog,
                       descriptions=["spectral angle to reconstruction (radians)"],
                       overwrite=overwrite) as er:
        bar = tqdm(total=height * width, unit="px", unit_scale=True, desc="unmix",
                   disable=not progress)
        for t in grid:
            values, valid = read_window(scene, t.rows, t.cols)
            a, recon = run(values, valid, (t.row, t.col))
            x = values[bands]
            err = spectral_angle(np.moveaxis(recon, 0, -1), np.moveaxis(x, 0, -1))
            err = err.astype(np.float32)
            err[~valid] = np.nan
            rs, cs = t.core_in_read
            ab.write(a[:, rs, cs], t.core_row, t.core_col)
            er.write(err[rs, cs], t.core_row, t.core_col)
            bar.update(t.pixels)
        bar.close()
    wl = scene.coords["wavelength"].values[bands]
    wl = wl if np.all(np.isfinite(wl)) else None
    write_library(paths["library_sli"].with_suffix(""), spectra, names, wl, overwrite=overwrite,
                  description=f"hsimap unmix ({method}) of {stem}")
    from hsimap.quicklook import abundances_png, endmembers_png

    abundances_png(paths["abundances"], paths["abundances_png"])
    endmembers_png(spectra, wl, names, paths["endmembers_png"])
    return UnmixResult(spectra, names, wl, paths, time.perf_counter() - t0)


# Windows held in memory for fitting: all of a small scene; of a large one, this many drawn
# evenly, so memory is bounded by the window size, never the scene's (64 windows of
# 144 x 144 px x 200 bands are 1 GiB).
MAX_FIT_WINDOWS = 64


def _train_network(scene, scan, bands, init, p, epochs, window, hidden, variants, lr,
                   endmember_lr, sparsity_weight, mse_weight, fixed_library, seed, progress):
    """Fit the unmixing network on the scene's windows, a few per step."""
    lo, hi = scan.lo, scan.hi
    usable = scan.usable
    if len(usable) > MAX_FIT_WINDOWS:
        rng = np.random.default_rng(seed)
        usable = [usable[i] for i in sorted(rng.choice(len(usable), MAX_FIT_WINDOWS,
                                                       replace=False))]
    windows = []
    for t in usable:
        values, valid = read_window(scene, t.rows, t.cols, bands)
        x = fill_invalid((values - lo) / (hi - lo), valid).astype(np.float32)
        windows.append((t, torch.from_numpy(x)[None], torch.from_numpy(valid)))
    cfg = ModelConfig(bands=len(bands), classes=1, endmembers=p, variants=variants,
                      hidden=hidden, coord_period=window)
    net = UnmixingNetwork(cfg)
    net.unmixing.init_endmembers(torch.from_numpy((init - lo) / (hi - lo)))
    if fixed_library:
        net.unmixing.endmembers.requires_grad_(False)
    params = [q for n, q in net.named_parameters() if n != "unmixing.endmembers"]
    groups = [{"params": params, "lr": lr}]
    if not fixed_library:
        # Slow on purpose: free endmembers under the angle loss drift toward the scene's
        # dominant spectra (the dark water endmember of Jasper Ridge moved 2 to 6 deg in 60
        # epochs at 1e-4), so the extracted spectra are kept nearly as they are and the
        # per-pixel variants carry the variability.
        groups.append({"params": [net.unmixing.endmembers], "lr": endmember_lr})
    optim = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=max(1, epochs // 10), gamma=0.9)
    # Large scenes: a bounded number of windows per epoch keeps an epoch's cost fixed.
    per_epoch = min(len(windows), 16)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(epochs), desc="fit", unit="epoch", disable=not progress)
    for _ in bar:
        net.train()
        pick = torch.randperm(len(windows), generator=gen)[:per_epoch].tolist()
        for k in pick:
            t, x, v = windows[k]
            a, recon = net(x, v, (t.row, t.col))
            # The angle term fits spectral shape; the squared error ties the amplitude of the
            # reconstruction to the data, which the angle alone leaves free.
            mse = ((recon - x) ** 2)[0][:, v].mean()
            loss = sad_loss(recon, x, v) + mse_weight * mse + \
                sparsity_weight * sparsity_loss(a, v)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if not fixed_library:
                with torch.no_grad():  # reflectance is non-negative: 0 is -lo/(hi-lo) here
                    net.unmixing.endmembers.clamp_(min=-lo / (hi - lo))
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    net.eval()
    return net
