"""Applying a trained model: one window-forward function, and scenes of any size streamed.

:func:`window_products` is the only place a model is applied to pixels; training validation,
test metrics and prediction all go through it. :func:`predict` builds a lazy
``xarray.Dataset`` over the scene's tiles (cores kept, halos discarded), one dask task per tile;
:func:`hsimap.outputs.write_outputs` streams it to disk window by window.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr

from hsimap.errors import HsimapError
from hsimap.io.scene import read_window
from hsimap.model.store import TrainedModel
from hsimap.windows import Tile, tiles

FIXED = ("classes", "confidence", "error")  # planes before the abundances in a tile's stack


@dataclass
class WindowProducts:
    """Per-pixel results of one window (invalid pixels: class 0, NaN elsewhere)."""

    classes: np.ndarray       # int32 (h, w), class ids
    confidence: np.ndarray    # float32 (h, w), max class probability
    error: np.ndarray         # float32 (h, w), spectral angle pixel vs reconstruction, radians
    abundances: np.ndarray    # float32 (P, h, w)
    logits: torch.Tensor | None = None


def scale_values(model: TrainedModel, values: np.ndarray) -> np.ndarray:
    """Physical values (all bands) to the model's input: used bands, scaled with the stored
    training statistics (never recomputed per window)."""
    lo, hi = model.scale
    x = values[model.band_indices]
    return (x - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))


def fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give invalid pixels the value of their nearest valid pixel.

    The network's 3 x 3 convolutions would otherwise see zeros beside nodata areas and leave a
    fringe of wrong classes along them. Outputs at invalid pixels are masked afterwards anyway.
    """
    if valid.all() or not valid.any():
        return x
    from scipy.ndimage import distance_transform_edt

    _, (ri, ci) = distance_transform_edt(~valid, return_indices=True)
    return x[:, ri, ci]


def model_input(model: TrainedModel, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The network's input for a window: used bands, scaled, nodata filled (float32)."""
    return np.ascontiguousarray(fill_invalid(scale_values(model, values), valid),
                                dtype=np.float32)


@torch.no_grad()
def window_products(model: TrainedModel, values: np.ndarray, valid: np.ndarray,
                    origin: tuple[int, int]) -> WindowProducts:
    """Run the model on one window of physical values (bands, h, w) with its valid mask."""
    net = model.network
    dev = model.device
    xt = torch.from_numpy(model_input(model, values, valid))[None].to(dev)
    vt = torch.from_numpy(valid).to(dev)
    if not valid.any():
        h, w = valid.shape
        nan = np.full((h, w), np.nan, np.float32)
        return WindowProducts(np.zeros((h, w), np.int32), nan, nan.copy(),
                              np.full((net.cfg.endmembers, h, w), np.nan, np.float32))
    out = net(xt, vt, origin)
    prob = torch.softmax(out.logits[0], dim=0)
    conf, idx = prob.max(dim=0)
    ids = torch.as_tensor(model.class_table.ids, device=dev)
    classes = ids[idx].cpu().numpy().astype(np.int32)
    recon = out.reconstruction[0]
    cos = (recon * xt[0]).sum(0) / (recon.norm(dim=0) * xt[0].norm(dim=0)).clamp_min(1e-12)
    err = torch.arccos(cos.clamp(-1, 1)).cpu().numpy().astype(np.float32)
    ab = out.abundances[0].cpu().numpy().astype(np.float32)
    conf_np = conf.cpu().numpy().astype(np.float32)
    classes[~valid] = 0
    for a in (conf_np, err):
        a[~valid] = np.nan
    ab[:, ~valid] = np.nan
    return WindowProducts(classes, conf_np, err, ab, out.logits)


def check_compatible(scene: xr.DataArray, model: TrainedModel, *,
                     ignore_wavelengths: bool = False, tolerance_nm: float = 5.0) -> None:
    """Refuse a scene the model was not trained for, before any output is created."""
    n_model = len(model.card["scene_wavelengths"]) if model.card.get("scene_wavelengths") \
        else int(model.card["scene_bands"])
    n_scene = scene.sizes["band"]
    if n_scene != n_model:
        raise HsimapError(f"scene has {n_scene} bands, the model was trained on {n_model}; "
                          "use a scene from the same sensor and processing")
    wl_model = model.card.get("scene_wavelengths")
    wl_scene = scene.coords["wavelength"].values
    if wl_model and not ignore_wavelengths and np.all(np.isfinite(wl_scene)):
        diff = float(np.max(np.abs(np.asarray(wl_model) - wl_scene)))
        if diff > tolerance_nm:
            raise HsimapError(f"scene wavelengths differ from the model's by up to {diff:.1f} nm "
                              f"(tolerance {tolerance_nm} nm); --ignore-wavelengths to proceed")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def predict(scene: xr.DataArray, model: TrainedModel, *, window: int | None = None,
            halo: int | None = None, on_tile: Callable[[Tile], None] | None = None,
            ignore_wavelengths: bool = False, check: bool = True) -> xr.Dataset:
    """Lazy predictions over a whole scene.

    Args:
        scene: from :func:`hsimap.io.open_scene`.
        model: from :func:`hsimap.model.store.load_model`.
        window, halo: override the model's window and halo, px.
        on_tile: called after each tile is computed (progress).
        check: refuse a scene the model was not trained for (callers that checked already
            pass False).

    Returns:
        Dataset with ``classes`` (y, x), ``confidence``, ``error`` and ``abundances``
        (endmember, y, x), dask-backed: computing a part runs only the tiles it needs.
    """
    if check:
        check_compatible(scene, model, ignore_wavelengths=ignore_wavelengths)
    window = window or model.window
    halo = model.halo if halo is None else halo
    height, width = scene.sizes["y"], scene.sizes["x"]
    try:
        grid = tiles(height, width, window, halo)
    except ValueError as exc:
        raise HsimapError(f"window {window}, halo {halo}: {exc}") from None
    p = model.config.endmembers
    planes = len(FIXED) + p
    lock = threading.Lock() if model.device.type == "cuda" else None

    def run(tile: Tile) -> np.ndarray:
        values, valid = read_window(scene, tile.rows, tile.cols)
        if lock is not None:
            with lock:
                prod = window_products(model, values, valid, (tile.row, tile.col))
        else:
            prod = window_products(model, values, valid, (tile.row, tile.col))
        rs, cs = tile.core_in_read
        out = np.empty((planes, tile.core_height, tile.core_width), np.float32)
        out[0] = prod.classes[rs, cs]
        out[1] = prod.confidence[rs, cs]
        out[2] = prod.error[rs, cs]
        out[3:] = prod.abundances[:, rs, cs]
        if on_tile is not None:
            on_tile(tile)
        return out

    token = dask.base.tokenize(scene.attrs.get("source"), model.card.get("model_hash"),
                               window, halo)
    rows: dict[int, list] = {}
    for i, t in enumerate(grid):
        d = dask.delayed(run, pure=True)(t, dask_key_name=f"hsimap-tile-{token}-{i}")
        block = da.from_delayed(d, shape=(planes, t.core_height, t.core_width), dtype=np.float32)
        rows.setdefault(t.core_row, []).append(block)
    stack = da.block([[b for b in rows[r]] for r in sorted(rows)])
    coords = {"y": scene.coords["y"], "x": scene.coords["x"]}
    names = model.endmember_names
    ds = xr.Dataset(
        {
            "classes": (("y", "x"), stack[0].astype(np.int32)),
            "confidence": (("y", "x"), stack[1]),
            "error": (("y", "x"), stack[2]),
            "abundances": (("endmember", "y", "x"), stack[3:]),
        },
        coords={**coords, "endmember": names},
        attrs={"source": scene.attrs.get("source", ""), "window": window, "halo": halo},
    )
    if scene.rio.crs is not None:
        ds = ds.rio.write_crs(scene.rio.crs)
    return ds.rio.write_transform(scene.rio.transform())
