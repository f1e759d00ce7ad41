"""Cutting a scene into overlapping windows: hsimap's one sampler.

A tile is a *read* window (what the model sees, ``window`` px a side where the scene allows) and
a *core* (what is kept and written). Cores tile the scene exactly, without overlap; each read
window extends its core by ``halo`` px on every side, shifted inward at the scene's edges so that
every read window has the full size when the scene is large enough. Training, prediction,
unmixing and batch all use these tiles, and :func:`scan_scene` reads them once to learn what a
fit needs before it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter

from hsimap.errors import HsimapError
from hsimap.io.scene import physical, read_block, read_window


@dataclass(frozen=True)
class Tile:
    row: int          # read window, scene pixels
    col: int
    height: int
    width: int
    core_row: int     # core, scene pixels
    core_col: int
    core_height: int
    core_width: int

    @property
    def rows(self) -> slice:
        return slice(self.row, self.row + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.col, self.col + self.width)

    @property
    def core_rows(self) -> slice:
        return slice(self.core_row, self.core_row + self.core_height)

    @property
    def core_cols(self) -> slice:
        return slice(self.core_col, self.core_col + self.core_width)

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """The core's position inside the read window."""
        r, c = self.core_row - self.row, self.core_col - self.col
        return slice(r, r + self.core_height), slice(c, c + self.core_width)

    @property
    def pixels(self) -> int:
        return self.core_height * self.core_width


def _axis(size: int, window: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(read_start, read_len, core_start, core_len) along one axis."""
    if size <= window:
        return [(0, size, 0, size)]
    core = window - 2 * halo
    out = []
    for start in range(0, size, core):
        length = min(core, size - start)
        lo = max(0, start - halo)
        hi = min(size, start + length + halo)
        # Keep the read window full-size at the edges, so every window sees as many pixels.
        if hi - lo < window:
            if lo == 0:
                hi = min(size, window)
            else:
                lo = max(0, hi - window)
        out.append((lo, hi - lo, start, length))
    return out


def tiles(height: int, width: int, window: int, halo: int) -> list[Tile]:
    """All tiles of a height x width scene, in raster order.

    Args:
        window: read window size, px (the model's window).
        halo: context kept around each core, px; cores are ``window - 2 * halo`` a side.

    A scene narrower than a window along one axis (a strip) is read in windows of a window's
    area, longer along the other axis: a 1 px strip in 1 x 64 px windows paid a window's fixed
    cost for every 48 px and ran at a tenth of a square scene's rate per pixel.
    """
    if window < 8:
        raise ValueError("window must be at least 8 px")
    if not 0 <= 2 * halo < window:
        raise ValueError("halo must be non-negative and less than half the window")
    win_y = win_x = window
    if height < window < width:
        win_x = min(width, window * window // max(height, 1))
    elif width < window < height:
        win_y = min(height, window * window // max(width, 1))
    return [Tile(r0, c0, rh, cw, cr, cc, ch, cwid)
            for (r0, rh, cr, ch) in _axis(height, win_y, halo)
            for (c0, cw, cc, cwid) in _axis(width, win_x, halo)]


def _smooth(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """3 x 3 mean over valid pixels: averages the noise down before the vertex search."""
    w = uniform_filter(valid.astype(np.float32), 3, mode="nearest")
    v = uniform_filter(values * valid, (1, 3, 3), mode="nearest")
    return v / np.maximum(w, 1e-6)


@dataclass
class SceneScan:
    """What one streaming pass over the scene gathers before anything is fitted."""

    lo: float                  # global min and max of valid pixels, used bands
    hi: float
    raw: np.ndarray            # (n, bands) valid pixels drawn evenly over the scene
    smooth: np.ndarray | None  # the same pixels averaged over their 3 x 3 neighbourhood
    usable: list[Tile]         # windows holding valid pixels


def dead_bands(scene: xr.DataArray, grid: list[Tile], bands: np.ndarray) -> np.ndarray:
    """Which of ``bands`` hold no information over the whole scene: nodata (or not finite)
    everywhere, or one value everywhere. Sensors fill absorption bands so (EnMAP writes six of
    its 224 bands as nodata) without always flagging them bad. Returns a bool per band."""
    nodata = scene.attrs.get("nodata")
    seen = np.zeros(len(bands), bool)
    lo = np.full(len(bands), np.inf)
    hi = np.full(len(bands), -np.inf)
    for t in grid:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN fill of a damaged scene
            raw = read_block(scene, (bands, t.core_rows, t.core_cols)).astype(np.float64)
        raw = raw.reshape(len(bands), -1)
        data = np.isfinite(raw)
        if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
            data &= raw != nodata
        seen |= data.any(axis=1)
        lo = np.minimum(lo, np.where(data, raw, np.inf).min(axis=1))
        hi = np.maximum(hi, np.where(data, raw, -np.inf).max(axis=1))
    return ~seen | (lo >= hi)


# Reflectance, radiance and their integer encodings all stay far inside this: a float scene
# reaching it was decoded wrongly (byte-swapped floats read as 1e30 or 1e-30).
MAX_MAGNITUDE = 1e9


def check_magnitude(lo: float, hi: float, source: object) -> None:
    """Refuse values no sensor writes, naming the likely cause."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > MAX_MAGNITUDE:
        raise HsimapError(f"{source}: values reach {lo:.3g} to {hi:.3g}, which no sensor "
                          "writes; is the header's byte order or data type right?")


def scan_scene(scene: xr.DataArray, grid: list[Tile], bands: np.ndarray, n: int = 0,
               seed: int = 0, smoothed: bool = False) -> SceneScan:
    """Read every window once: the value range of the used ``bands`` over valid pixels, up to
    ``n`` sample pixels drawn evenly over the scene, also smoothed when ``smoothed`` (the halo
    makes the smoothing exact at window edges), and which windows have valid pixels.

    This is the one pass over a scene that training (its scaling) and unmixing (scaling,
    endmember extraction, fitting windows) make before fitting anything.
    """
    rng = np.random.default_rng(seed)
    lo, hi = math.inf, -math.inf
    raw, smooth, usable = [], [], []
    share = min(1.0, 4.0 * max(n, 0) / max(1, sum(t.pixels for t in grid)))
    for t in grid:
        values, valid = read_window(scene, t.rows, t.cols, bands, valid_bands=bands)
        if not valid.any():
            continue
        usable.append(t)
        v = values[:, valid]
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        if n <= 0:
            continue
        rs, cs = t.core_in_read
        pick = valid[rs, cs] & (rng.random(valid[rs, cs].shape) < share)
        if pick.any():
            raw.append(values[:, rs, cs][:, pick].T)
            if smoothed:
                smooth.append(_smooth(values, valid)[:, rs, cs][:, pick].T)
    if not usable:
        raise HsimapError("the scene has no valid pixels")
    check_magnitude(lo, hi, scene.attrs.get("source", "scene"))
    if not raw:  # valid pixels so sparse that the draw missed them all
        raw = smooth = [np.zeros((0, len(bands)), np.float32)]
    raw = np.concatenate(raw)
    smooth = np.concatenate(smooth) if smoothed else None
    if len(raw) > n:
        keep = rng.choice(len(raw), n, replace=False)
        raw = raw[keep]
        smooth = smooth[keep] if smoothed else None
    return SceneScan(lo, max(hi, lo + 1e-6), raw, smooth, usable)


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


class TrainingScan:
    """:func:`dead_bands` and :func:`scan_scene` of the bands left, in one read of the scene
    (each tile's core once): a flight line of 16 Mpx x 200 bands is gigabytes to decompress.

    Which pixels are valid depends on which bands are dead, known only once every scene of a
    run is read. Each core is judged on the bands that have data in it; that is the final
    judgement wherever the bands it lacks turn out dead and no pixel lacks only some of the
    others, which holds for nodata borders and for bands a sensor fills everywhere. A core
    where it does not hold is read again in :meth:`finish`, once the bands are known.
    """

    def __init__(self, scene: xr.DataArray, grid: list[Tile], bands: np.ndarray, n: int,
                 seed: int = 0):
        self.scene, self.grid, self.bands, self.n, self.seed = scene, grid, bands, n, seed
        nodata = scene.attrs.get("nodata")
        fill = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
        nb = len(bands)
        seen = np.zeros(nb, bool)
        blo = np.full(nb, np.inf)
        bhi = np.full(nb, -np.inf)
        self.share = min(1.0, 4.0 * max(n, 0) / max(1, sum(t.pixels for t in grid)))
        self.tiles: list[tuple[np.ndarray, bool, np.ndarray | None, np.ndarray | None]] = []
        self.picks: dict[int, np.ndarray] = {}
        for k, t in enumerate(grid):
            raw = read_block(scene, (bands, t.core_rows, t.core_cols)).reshape(nb, -1)
            with np.errstate(invalid="ignore", over="ignore"):  # NaN fill of a damaged scene
                data = np.isfinite(raw) if raw.dtype.kind == "f" else np.ones(raw.shape, bool)
                if fill:
                    data &= raw != nodata
                as64 = raw.astype(np.float64)
            seen |= data.any(axis=1)
            blo = np.minimum(blo, np.where(data, as64, np.inf).min(axis=1))
            bhi = np.maximum(bhi, np.where(data, as64, -np.inf).max(axis=1))
            present = data.any(axis=1)
            if not present.any():
                self.tiles.append((~present, True, None, None))
                continue
            full = data[present].all(axis=0)
            exact = not (data[present].any(axis=0) & ~full).any()
            if not full.any():
                self.tiles.append((~present, exact, None, None))
                continue
            values = self._physical(raw)
            self.tiles.append((~present, exact, np.where(full, values, np.inf).min(axis=1),
                               np.where(full, values, -np.inf).max(axis=1)))
            self._draw(k, values, full)
        self.dead = ~seen | (blo >= bhi)

    def _physical(self, raw: np.ndarray) -> np.ndarray:
        return physical(self.scene, raw)

    def _draw(self, k: int, values: np.ndarray, valid: np.ndarray) -> None:
        """Sample pixels of core ``k``; its own random stream, so a core read again in
        :meth:`finish` draws as it would have."""
        if self.n <= 0:
            return
        rng = np.random.default_rng([self.seed, k])
        pick = valid & (rng.random(valid.shape) < self.share)
        if pick.any():
            self.picks[k] = values[:, pick].T
        else:
            self.picks.pop(k, None)

    def finish(self, keep: np.ndarray) -> SceneScan:
        """The scan of the bands ``keep`` (bool per band; those dead in no scene of the run).
        ``usable`` lists the tiles whose core has valid pixels."""
        nb = len(self.bands)
        lo_all, hi_all, usable = math.inf, -math.inf, []
        for k, (lacking, exact, lo, hi) in enumerate(self.tiles):
            t = self.grid[k]
            if not exact or (lacking & keep).any():   # judged again on the bands kept
                values, valid = read_window(self.scene, t.core_rows, t.core_cols,
                                            self.bands[keep], valid_bands=self.bands[keep])
                flat = valid.ravel()
                v = values.reshape(int(keep.sum()), -1)
                all_bands = np.zeros((nb, v.shape[1]), np.float32)
                all_bands[keep] = v
                self._draw(k, all_bands, flat)
                if flat.any():
                    usable.append(t)
                    lo_all = min(lo_all, float(v[:, flat].min()))
                    hi_all = max(hi_all, float(v[:, flat].max()))
                continue
            if lo is None:
                continue
            usable.append(t)
            lo_all = min(lo_all, float(lo[keep].min()))
            hi_all = max(hi_all, float(hi[keep].max()))
        if not usable:
            raise HsimapError("the scene has no valid pixels")
        check_magnitude(lo_all, hi_all, self.scene.attrs.get("source", "scene"))
        chosen = [self.picks[k][:, keep] for k in sorted(self.picks)]
        raw = np.concatenate(chosen) if chosen else np.zeros((0, int(keep.sum())), np.float32)
        if len(raw) > self.n:
            raw = raw[np.random.default_rng(self.seed).choice(len(raw), self.n, replace=False)]
        return SceneScan(lo_all, max(hi_all, lo_all + 1e-6), raw, None, usable)
