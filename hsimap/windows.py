"""Cutting a scene into overlapping windows: hsimap's one sampler.

A tile is a *read* window (what the model sees, ``window`` px a side where the scene allows) and
a *core* (what is kept and written). Cores tile the scene exactly, without overlap; each read
window extends its core by ``halo`` px on every side, shifted inward at the scene's edges so that
every read window has the full size when the scene is large enough. Training, prediction,
unmixing and batch all use these tiles.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """
    if window < 8:
        raise ValueError("window must be at least 8 px")
    if not 0 <= 2 * halo < window:
        raise ValueError("halo must be non-negative and less than half the window")
    return [Tile(r0, c0, rh, cw, cr, cc, ch, cwid)
            for (r0, rh, cr, ch) in _axis(height, window, halo)
            for (c0, cw, cc, cwid) in _axis(width, window, halo)]
