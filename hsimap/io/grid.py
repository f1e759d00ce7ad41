"""A raster grid and its geometry: size, CRS and transform, bounds, footprint, pixel area,
alignment, union (as odc-geo's GeoBox, for what hsimap needs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS


@dataclass(frozen=True)
class Grid:
    """A raster grid: size, CRS and affine transform (GDAL's names).

    ``has_transform`` is False where the source has no geotransform (a .mat cube, an ENVI
    file without map info): the transform is then the identity of pixel coordinates and is
    not written, so that outputs are as unreferenced as their source rather than flipped
    onto made-up coordinates. ``gcps`` (rasterio's ``(points, crs)``) carries a source
    georeferenced by ground control points, written into every output as they were."""

    width: int
    height: int
    crs: CRS | None
    transform: Affine
    has_transform: bool = True
    gcps: tuple | None = None

    @classmethod
    def from_scene(cls, scene: Any) -> Grid:
        gcps = scene.attrs.get("gcps")
        has = bool(scene.attrs.get("georeferenced", True)) and gcps is None
        return cls(scene.sizes["x"], scene.sizes["y"], scene.rio.crs if has else None,
                   scene.rio.transform(), has, gcps)

    @classmethod
    def of(cls, src: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(src.width, src.height, src.crs, src.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the CRS, whichever way the axes run."""
        t = self.transform
        xs = [t.c, t.c + self.width * t.a + self.height * t.b]
        ys = [t.f, t.f + self.width * t.d + self.height * t.e]
        return min(xs), min(ys), max(xs), max(ys)

    def footprint_wgs84(self) -> tuple[float, float, float, float] | None:
        """The bounds in longitude and latitude (edges densified), or None without a CRS."""
        if self.crs is None or not self.has_transform:
            return None
        from rasterio.warp import transform_bounds

        return transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21)

    def pixel_area_m2(self) -> np.ndarray | None:
        """Each row's pixel area in square metres (None without a CRS): constant in a
        projected CRS, from the CRS's ellipsoid in a geographic one (smaller towards the
        poles)."""
        if self.crs is None or not self.has_transform:
            return None
        t = self.transform
        if self.crs.is_projected:
            factor = self.crs.linear_units_factor[1]
            return np.full(self.height, abs(t.a * t.e - t.b * t.d) * factor ** 2)
        geod = geod_of(self.crs)
        out = np.empty(self.height)
        for r in range(self.height):
            xs = [t.c, t.c + t.a, t.c + t.a, t.c]
            ys = [t.f + t.e * r, t.f + t.e * r, t.f + t.e * (r + 1), t.f + t.e * (r + 1)]
            out[r] = abs(geod.polygon_area_perimeter(xs, ys)[0])
        return out

    def aligned_with(self, other: Grid, tol: float = 1e-9) -> bool:
        """Same CRS and pixel size, axes unrotated: the grids can share one pixel lattice."""
        a, b = self.transform, other.transform
        return (self.crs == other.crs and abs(a.a - b.a) <= tol and abs(a.e - b.e) <= tol
                and a.b == b.b == a.d == b.d == 0)

    def same_as(self, other: Grid) -> bool:
        """The same pixels: size, transform (to float tolerance) and CRS (a missing CRS on
        either side is taken as the other's)."""
        return ((self.width, self.height) == (other.width, other.height)
                and self.transform.almost_equals(other.transform)
                and (self.crs == other.crs or self.crs is None or other.crs is None))

    def union(self, others: Sequence[Grid]) -> Grid:
        """The grid covering this one and ``others`` (all aligned with it), on its lattice."""
        grids = [self, *others]
        t0 = self.transform
        left = min(g.transform.c for g in grids)
        top = max(g.transform.f for g in grids)
        right = max(g.transform.c + g.width * g.transform.a for g in grids)
        bottom = min(g.transform.f + g.height * g.transform.e for g in grids)
        return Grid(round((right - left) / t0.a), round((bottom - top) / t0.e), self.crs,
                    Affine(t0.a, 0, left, 0, t0.e, top))

    def window(self, row: int, col: int, height: int, width: int) -> Grid:
        """The grid of a window of this one, ``height`` x ``width`` px from (row, col)."""
        return Grid(width, height, self.crs,
                    self.transform * Affine.translation(col, row), self.has_transform)


def geod_of(crs: CRS):
    """The ellipsoid of ``crs`` for geodesic areas (WGS84 where the CRS names none)."""
    from pyproj import CRS as ProjCRS
    from pyproj import Geod

    return ProjCRS.from_user_input(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
