"""Applying a trained model: one window-forward function, and scenes of any size streamed.

:func:`apply_window` is the only place a network is applied to pixels: the classifier's
windows (:func:`batch_products`, for prediction, training validation and test metrics) and
``hsimap unmix``'s go through it. :func:`predict` builds a lazy
``xarray.Dataset`` over the scene's tiles through :mod:`hsimap.engine` (cores kept, halos
discarded, one dask task per tile); :func:`hsimap.workflows.predict.predict_scene` streams it
to disk.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dask
import numpy as np
import torch
import xarray as xr

from hsimap.classes import class_dtype
from hsimap.engine import scene_tiles, tile_array
from hsimap.errors import HsimapError
from hsimap.io.classmaps import class_metadata
from hsimap.io.gdal import bounded_write_cache
from hsimap.io.scene import physical, read_window
from hsimap.model.store import TrainedModel
from hsimap.windows import Tile, check_magnitude, fill_invalid

FIXED = ("classes", "confidence", "error")  # planes before the abundances in a tile's stack


@dataclass
class WindowProducts:
    """Per-pixel results of one window (invalid pixels: class 0, NaN elsewhere)."""

    classes: np.ndarray       # int32 (h, w), class ids
    confidence: np.ndarray    # float32 (h, w), max class probability
    error: np.ndarray         # float32 (h, w), spectral angle pixel vs reconstruction, radians
    abundances: np.ndarray    # float32 (P, h, w)
    probabilities: np.ndarray  # float32 (C, h, w), softmax over the model's classes

    def stack(self, probabilities: bool = False) -> np.ndarray:
        """(3 + P [+ C], h, w) float32: classes, confidence, error (:data:`FIXED` order),
        abundances, and the class probabilities when asked for."""
        planes = [np.stack([self.classes.astype(np.float32), self.confidence, self.error]),
                  self.abundances]
        if probabilities:
            planes.append(self.probabilities)
        return np.concatenate(planes)


@dataclass(frozen=True)
class Scaling:
    """How a network sees a scene: the bands it reads and the span they were scaled with when
    it was fitted (from the training scene, never recomputed per window)."""

    bands: np.ndarray
    lo: float
    hi: float

    @classmethod
    def of(cls, model: TrainedModel) -> Scaling:
        lo, hi = model.scale
        return cls(model.band_indices, lo, hi)

    def scaled(self, values: np.ndarray) -> np.ndarray:
        """Physical values (all bands) to the used bands, scaled."""
        x = values[self.bands]
        return (x - np.float32(self.lo)) / np.float32(max(self.hi - self.lo, 1e-12))

    def input(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """A window's network input: used bands, scaled, nodata filled (float32)."""
        return np.ascontiguousarray(fill_invalid(self.scaled(values), valid), dtype=np.float32)


def scale_values(model: TrainedModel, values: np.ndarray) -> np.ndarray:
    """Physical values (all bands) to the model's input: used bands, scaled with the stored
    training statistics."""
    return Scaling.of(model).scaled(values)


def model_input(model: TrainedModel, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The network's input for a window: used bands, scaled, nodata filled (float32)."""
    return Scaling.of(model).input(values, valid)


@dataclass
class Applied:
    """A network's outputs for a batch of windows, as numpy; NaN at invalid pixels."""

    abundances: np.ndarray             # float32 (B, P, h, w)
    error: np.ndarray                  # float32 (B, h, w), spectral angle to the reconstruction
    logits: torch.Tensor | None        # (B, C, h, w) on the network's device, for a classifier
    inputs: np.ndarray | None          # float32 (B, bands used, h, w): what the network read


Window = tuple[np.ndarray, np.ndarray, tuple[int, int]]  # values, valid, origin (row, col)


@torch.no_grad()
def apply_window(network: torch.nn.Module, scaling: Scaling, windows: Sequence[Window],
                 device: torch.device | str = "cpu") -> Applied:
    """Run a network (the classifier, or ``hsimap unmix``'s unmixing network) on windows of
    one size: the one place a network meets pixels. Scaling, nodata filling, the error map and
    masking are the same for every caller."""
    xs = np.stack([scaling.input(v, m) for v, m, _ in windows])
    valid = np.stack([m for _, m, _ in windows])
    return apply_scaled(network, scaling, torch.from_numpy(xs), torch.from_numpy(valid),
                        [o for _, _, o in windows], device, xs)


def apply_scaled(network: torch.nn.Module, scaling: Scaling, x: torch.Tensor,
                 valid: torch.Tensor, origins: list[tuple[int, int]],
                 device: torch.device | str = "cpu", xs: np.ndarray | None = None) -> Applied:
    """:func:`apply_window` on windows already scaled by ``scaling`` (training's cached
    validation chips): (n, bands, h, w) inputs and (n, h, w) valid masks."""
    dev = torch.device(device)
    xt = x.to(dev, torch.float32)
    out = network(xt, valid.to(dev), origins)
    valid = valid.cpu().numpy()
    if isinstance(out, tuple):  # the unmixing network alone
        (abundances, recon), logits = out, None
    else:
        abundances, recon, logits = out.abundances, out.reconstruction, out.logits
    # The angle in physical units: min-max scaling adds an offset to every band, which
    # changes angles.
    span, lo = scaling.hi - scaling.lo, scaling.lo
    recon, x = (recon * span + lo).flatten(2), (xt * span + lo).flatten(2)   # (B, bands, hw)
    # Sums of products, not norm(dim=1): torch's norm over the band axis of a band-first
    # window is a strided reduction, 2.5x slower than these.
    dot, rr, xx = (recon * x).sum(1), (recon * recon).sum(1), (x * x).sum(1)
    cos = (dot / (rr * xx).sqrt().clamp_min(1e-12)).view(valid.shape)
    err = torch.arccos(cos.clamp(-1, 1)).cpu().numpy().astype(np.float32)
    ab = abundances.cpu().numpy().astype(np.float32)
    err[~valid] = np.nan
    ab[np.broadcast_to(~valid[:, None], ab.shape)] = np.nan
    return Applied(ab, err, logits, xs)


def window_products(model: TrainedModel, values: np.ndarray, valid: np.ndarray,
                    origin: tuple[int, int]) -> WindowProducts:
    """Run the model on one window of physical values (bands, h, w) with its valid mask."""
    return batch_products(model, [(values, valid, origin)])[0]


@torch.no_grad()
def batch_products(model: TrainedModel,
                   windows: Sequence[tuple[np.ndarray, np.ndarray, tuple[int, int]]]
                   ) -> list[WindowProducts]:
    """Run the model on windows of one size, ``(values, valid, origin)`` each, in one batch.

    Each window's products equal what :func:`window_products` gives it alone (the network
    keeps windows of a batch apart), up to float rounding."""
    shapes = {w[1].shape for w in windows}
    if len(shapes) > 1:  # windows of several sizes: one batch per size
        out: list[WindowProducts | None] = [None] * len(windows)
        for shape in shapes:
            ks = [k for k, w in enumerate(windows) if w[1].shape == shape]
            for k, p in zip(ks, batch_products(model, [windows[k] for k in ks]), strict=True):
                out[k] = p
        return out
    out = [None] * len(windows)
    p, n_classes = model.config.endmembers, len(model.class_table.ids)
    live = [k for k, (_, valid, _) in enumerate(windows) if valid.any()]
    for k, (_, valid, _) in enumerate(windows):
        if k not in live:
            h, w = valid.shape
            nan = np.full((h, w), np.nan, np.float32)
            out[k] = WindowProducts(np.zeros((h, w), np.int32), nan, nan.copy(),
                                    np.full((p, h, w), np.nan, np.float32),
                                    np.full((n_classes, h, w), np.nan, np.float32))
    if not live:
        return out
    valid = np.stack([windows[k][1] for k in live])
    b, (h, w) = len(live), valid.shape[1:]
    ids = np.asarray(model.class_table.ids, np.int32)
    xs = None
    if model.network is not None:
        applied = apply_window(model.network, Scaling.of(model), [windows[k] for k in live],
                               model.device)
        prob = torch.softmax(applied.logits, dim=1)
        conf, idx = prob.max(dim=1)
        classes = ids[idx.cpu().numpy()].astype(np.int32)
        conf_np = conf.cpu().numpy().astype(np.float32)
        pr = prob.cpu().numpy().astype(np.float32)
        err, ab, xs = applied.error, applied.abundances, applied.inputs
    else:
        err = np.full((b, h, w), np.nan, np.float32)
        ab = np.zeros((b, 0, h, w), np.float32)
    if model.classifier is not None:
        # The baseline classifies each valid pixel on its own (the network, when there is one,
        # still unmixes); its probabilities replace the network's.
        if xs is None:  # a baseline alone: the network did not scale the windows already
            scaling = Scaling.of(model)
            xs = np.stack([scaling.input(windows[k][0], windows[k][1]) for k in live])
        bands = xs.shape[1]
        flat = xs.transpose(0, 2, 3, 1).reshape(-1, bands)
        pick = valid.reshape(-1)
        idx, prob = model.classifier.predict(flat[pick])
        cls = np.zeros(b * h * w, np.int32)
        cls[pick] = ids[idx]
        full = np.zeros((b * h * w, n_classes), np.float32)
        full[pick] = prob
        classes = cls.reshape(b, h, w)
        pr = np.ascontiguousarray(full.reshape(b, h, w, n_classes).transpose(0, 3, 1, 2))
        conf_np = np.zeros((b, h, w), np.float32)
        conf_np.reshape(-1)[pick] = prob[np.arange(len(idx)), idx]
    for j, k in enumerate(live):
        v = valid[j]
        c, cf, e, a, pj = classes[j], conf_np[j], err[j], ab[j], pr[j]
        c[~v] = 0
        cf[~v] = np.nan
        e[~v] = np.nan       # already, from apply_window; not for a baseline alone
        a[:, ~v] = np.nan
        pj[:, ~v] = np.nan
        out[k] = WindowProducts(c, cf, e, a, pj)
    return out


def check_compatible(scene: xr.DataArray, model: TrainedModel, *,
                     ignore_wavelengths: bool = False, tolerance_nm: float = 5.0) -> None:
    """Refuse a scene the model was not trained for, before any output is created."""
    wl_model = model.card.scene_wavelengths
    n_model = len(wl_model) if wl_model else model.card.scene_bands
    n_scene = scene.sizes["band"]
    if n_scene != n_model:
        raise HsimapError(f"scene has {n_scene} bands, the model was trained on {n_model}; "
                          "use a scene from the same sensor and processing")
    wl_scene = scene.coords["wavelength"].values
    known = bool(wl_model) and bool(np.all(np.isfinite(wl_scene)))
    if not known and not ignore_wavelengths:
        which = "the scene has" if wl_model else "the model's training scene had"
        warnings.warn(f"{which} no wavelengths: only the band count ({n_scene}) was checked, "
                      "not that the bands are the same or in the same order", stacklevel=2)
    if known and not ignore_wavelengths:
        diff = float(np.max(np.abs(np.asarray(wl_model) - wl_scene)))
        if diff > tolerance_nm:
            raise HsimapError(f"scene wavelengths differ from the model's by up to {diff:.1f} nm "
                              f"(tolerance {tolerance_nm} nm); --ignore-wavelengths to proceed")


# How far a scene's value span may be from the training scene's before it is refused as being
# in other units: reflectance x 10,000 against 0-1 is a factor of 10,000; two scenes of one
# sensor differ by far less than 10.
SCALE_LIMIT = 10.0
CHECK_SAMPLE = 2 ** 20     # values the fill-value and scale checks look at


def check_values(scene: xr.DataArray, model: TrainedModel, grid: list[Tile], *,
                 ignore_scale: bool = False, windows: int = 16) -> None:
    """Refuse, before any output exists, a scene with no data in the model's bands, or whose
    values are on another scale than the training scene's (judged on windows spread evenly
    over the scene; the whole scene is searched only when none of them holds data)."""
    bands = model.band_indices
    step = max(1, len(grid) // windows)
    values = []
    # GDAL's default block cache (5% of RAM) would keep every block these reads touch.
    with bounded_write_cache():
        for t in grid[::step][:windows]:
            v, valid = read_window(scene, t.rows, t.cols, bands, valid_bands=bands)
            if valid.any():
                values.append(v[:, valid].ravel())
        if not values:  # the sample may have missed a small valid area: search every window
            for t in grid:
                v, valid = read_window(scene, t.rows, t.cols, bands, valid_bands=bands)
                if valid.any():
                    values.append(v[:, valid].ravel())
                    break
    source = scene.attrs.get("source", "scene")
    if not values:
        raise HsimapError(f"{source}: no pixel has data in the {len(bands)} bands the model "
                          "uses (all nodata); nothing to predict")
    values = np.concatenate(values)
    # The fill-value and percentile checks on an even subsample (about 1 M of the ~13 M
    # values): their thresholds are shares, and the full sample cost a third of a second.
    sample = values[::max(1, values.size // CHECK_SAMPLE)]
    if scene.attrs.get("nodata") is None:
        # A fill value nobody declared reads as data, and then as "other units".
        for fill in (-9999, -32768, -32767, -999):
            share = float(np.mean(np.isclose(sample, physical(scene, fill))))
            if share > 0.001:
                raise HsimapError(f"{source}: {share:.1%} of its values are {fill}, a fill value "
                                  "it does not declare as nodata; declare it (gdal_edit.py "
                                  f"-a_nodata {fill}, or the ENVI header's data ignore value)")
    check_magnitude(float(values.min()), float(values.max()), source)
    p1, p99 = (float(q) for q in np.percentile(sample, [1, 99]))
    lo, hi = model.scale
    ratio = (p99 - p1) / max(hi - lo, 1e-12)
    if not ignore_scale and p99 > p1 and not 1 / SCALE_LIMIT <= ratio <= SCALE_LIMIT:
        raise HsimapError(f"{source}: values span {p1:.4g} to {p99:.4g} (1st-99th percentile), "
                          f"the model was trained on {lo:.4g} to {hi:.4g}: other units "
                          "(reflectance x 10,000?); set the scene's scale factor, or "
                          "--ignore-scale to proceed")


# Windows per forward pass on a GPU: enough to fill it at the default window (8 x 64 x 64 px
# = 32,768 tokens); one window at a time left it idle between small kernels.
GPU_BATCH = 8


def prepare(scene: xr.DataArray, model: TrainedModel, *, window: int | None = None,
            halo: int | None = None, ignore_wavelengths: bool = False,
            ignore_scale: bool = False) -> list[Tile]:
    """Every check a scene passes before a model sees it, once: bands and wavelengths
    (:func:`check_compatible`), window and halo, values and scale (:func:`check_values`).
    Returns the tile grid the model runs on. Every path from a scene to a model (predict,
    batch, suggest, the public :func:`predict`) goes through here."""
    check_compatible(scene, model, ignore_wavelengths=ignore_wavelengths)
    window = model.window if window is None else window
    halo = model.halo if halo is None else halo
    grid = scene_tiles(scene, window, halo)   # refuses a window or halo that cannot tile
    check_values(scene, model, grid, ignore_scale=ignore_scale)
    return grid


def predict(scene: xr.DataArray, model: TrainedModel, *, window: int | None = None,
            halo: int | None = None, on_tile: Callable[[Tile], None] | None = None,
            ignore_wavelengths: bool = False, ignore_scale: bool = False,
            batch: int | None = None, probabilities: bool = False,
            grid: list[Tile] | None = None) -> xr.Dataset:
    """Lazy predictions over a whole scene.

    Args:
        scene: from :func:`hsimap.io.open_scene`.
        model: from :func:`hsimap.model.store.load_model`.
        window, halo: override the model's window and halo, px.
        on_tile: called after each tile is computed (progress).
        ignore_wavelengths, ignore_scale: proceed although the scene's wavelengths or value
            scale differ from the model's (:func:`prepare` refuses them otherwise).
        grid: what :func:`prepare` returned for this scene, model, window and halo, where the
            caller ran it already (before creating outputs); None: it runs here.
        batch: windows per forward pass (default: :data:`GPU_BATCH` on CUDA, 1 on the CPU,
            where windows run in parallel on the engine's threads instead).
        probabilities: also ``probabilities`` (class, y, x), the softmax per class.

    Returns:
        Dataset with ``classes`` (y, x), ``confidence``, ``error`` and ``abundances``
        (endmember, y, x), dask-backed: computing a part runs only the tiles it needs.
        ``classes`` is uint8 (uint16 for ids above 255) with 0 as nodata (``_FillValue``), and
        carries the class names and colours in its attrs (``CLASS_NAMES``, ``CLASS_COLORS``,
        JSON), so that ``ds.classes.rio.to_raster(path)`` writes a map hsimap reads back with
        its classes.
    """
    if grid is None:
        grid = prepare(scene, model, window=window, halo=halo,
                       ignore_wavelengths=ignore_wavelengths, ignore_scale=ignore_scale)
    window = model.window if window is None else window
    halo = model.halo if halo is None else halo

    def run(values: np.ndarray, valid: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return window_products(model, values, valid, origin).stack(probabilities)

    def run_batch(windows) -> list[np.ndarray]:
        return [p.stack(probabilities) for p in batch_products(model, windows)]

    cuda = model.device.type == "cuda"
    if batch is None:
        batch = GPU_BATCH if cuda else 1
    token = dask.base.tokenize(scene.attrs.get("source"), model.card.model_hash, window, halo,
                               probabilities)
    p = model.config.endmembers
    planes = len(FIXED) + p + (model.config.classes if probabilities else 0)
    stack = tile_array(scene, grid, run, planes,
                       name=f"tile-{token}", on_tile=on_tile, serialize=cuda,
                       valid_bands=model.band_indices, batch_fn=run_batch, batch=batch)
    table = model.class_table
    class_attrs = {"_FillValue": 0, "long_name": "class", **class_metadata(table)}
    ds = xr.Dataset(
        {
            "classes": (("y", "x"), stack[0].astype(class_dtype(table)), class_attrs),
            "confidence": (("y", "x"), stack[1],
                           {"long_name": "max class probability", "units": "probability"}),
            "error": (("y", "x"), stack[2],
                      {"long_name": "spectral angle to reconstruction", "units": "radians"}),
            "abundances": (("endmember", "y", "x"), stack[3:3 + p], {"units": "fraction"}),
        },
        coords={"y": scene.coords["y"], "x": scene.coords["x"],
                "endmember": model.endmember_names},
        attrs={"source": scene.attrs.get("source", ""), "window": window, "halo": halo},
    )
    if probabilities:
        ds["probabilities"] = xr.DataArray(
            stack[3 + p:], dims=("class", "y", "x"), coords={"class": list(table.names)},
            attrs={"long_name": "class probability (softmax)", "units": "probability"})
    if scene.rio.crs is not None:
        ds = ds.rio.write_crs(scene.rio.crs)
    return ds.rio.write_transform(scene.rio.transform())
