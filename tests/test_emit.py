"""EMIT L2A granules as downloaded (issue 31): a netCDF4 reflectance file in swath geometry with
its geometry lookup table, and the mask product beside it.

No real granule fits in the repository, so one is made in the documented layout: a synthetic
scene (mixed from real USGS spectra, on a real CRS) is the map truth; the swath samples it along
a rotated track, as the ISS's ground track crosses a map grid; the GLT maps every map pixel back
to its nearest swath pixel (0 outside the swath). Written with h5py's dimension scales, so that
netCDF readers see the dimensions too.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene, read_window
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import hsimap

MASK_BANDS = ["Cloud flag", "Cirrus flag", "Water flag", "Spacecraft Flag",
              "Dilated Cloud Flag", "AOD550", "H2O (g cm-2)", "Aggregate Flag"]


def _nc_dims(f, names_sizes: dict[str, int]) -> dict:
    dims = {}
    for name, size in names_sizes.items():
        d = f.create_dataset(name, data=np.arange(size, dtype=np.float32))
        d.make_scale(name)
        dims[name] = d
    return dims


def _attach(var, dims, names):
    for i, n in enumerate(names):
        var.dims[i].attach_scale(dims[n])


def emit_granule(d: Path, *, angle: float = 14.0, cloud: tuple[slice, slice] | None = None,
                 mask_file: bool = True, bad_glt: bool = False) -> dict:
    """Write EMIT_L2A_RFL_..nc (and _MASK_) into ``d``; return the arrays the test checks."""
    import h5py

    made = make_scene(d / "truth.tif", SynthSpec(width=70, height=60, bands=30, classes=4,
                                                 region_size=24, crs="EPSG:4326",
                                                 pixel_size=0.000542,
                                                 origin=(-112.30, 36.10), seed=4))
    with rasterio.open(made.scene) as src:
        truth = src.read()                       # (bands, rows, cols) on the map grid
        transform, crs = src.transform, src.crs
        wl = np.array([float(src.tags(b)["wavelength"]) for b in range(1, src.count + 1)])
    bands, rows, cols = truth.shape
    # The swath: track along a line at ``angle`` degrees to the map's columns.
    a = math.radians(angle)
    down, cross = 64, 52
    i, j = np.meshgrid(np.arange(down), np.arange(cross), indexing="ij")
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    r = cy + (i - (down - 1) / 2) * math.cos(a) - (j - (cross - 1) / 2) * math.sin(a)
    c = cx + (i - (down - 1) / 2) * math.sin(a) + (j - (cross - 1) / 2) * math.cos(a)
    rr, cc = np.rint(r).astype(int), np.rint(c).astype(int)
    inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
    swath = np.full((down, cross, bands), -9999.0, np.float32)
    swath[inside] = truth[:, rr[inside], cc[inside]].T
    # The GLT: each map pixel's nearest swath pixel (the inverse rotation), 1-based.
    R, C = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # noqa: N806
    ii = np.rint((R - cy) * math.cos(a) + (C - cx) * math.sin(a) + (down - 1) / 2).astype(int)
    jj = np.rint(-(R - cy) * math.sin(a) + (C - cx) * math.cos(a) + (cross - 1) / 2).astype(int)
    on = (ii >= 0) & (ii < down) & (jj >= 0) & (jj < cross)
    glt_y = np.where(on, ii + 1, 0).astype(np.int32)
    glt_x = np.where(on, jj + 1, 0).astype(np.int32)
    if bad_glt:
        glt_y[0, 0] = down + 5
    good = np.ones(bands, np.uint8)
    good[[12, 13]] = 0
    stem = "EMIT_L2A_RFL_001_20240501T181500_2412212_004"
    path = d / f"{stem}.nc"
    with h5py.File(path, "w") as f:
        dims = _nc_dims(f, {"downtrack": down, "crosstrack": cross, "bands": bands,
                            "ortho_y": rows, "ortho_x": cols})
        v = f.create_dataset("reflectance", data=swath, chunks=(16, 16, bands))
        v.attrs["_FillValue"] = np.float32(-9999)
        _attach(v, dims, ["downtrack", "crosstrack", "bands"])
        g = f.create_group("sensor_band_parameters")
        g["wavelengths"], g["fwhm"], g["good_wavelengths"] = wl, np.full(bands, 8.5), good
        loc = f.create_group("location")
        loc["glt_x"], loc["glt_y"] = glt_x, glt_y
        f.attrs["geotransform"] = np.array(transform.to_gdal(), float)
        f.attrs["spatial_ref"] = crs.to_wkt()
        f.attrs["time_coverage_start"] = "2024-05-01T18:15:00+0000"
    flags = np.zeros((down, cross, len(MASK_BANDS)), np.float32)
    if cloud is not None:
        flags[cloud[0], cloud[1], 0] = 1
    if mask_file:
        with h5py.File(d / f"{stem.replace('_RFL_', '_MASK_')}.nc", "w") as f:
            f["mask"] = flags
            g = f.create_group("sensor_band_parameters")
            g["mask_bands"] = np.array(MASK_BANDS, dtype=h5py.string_dtype())
    return {"path": path, "swath": swath, "glt_x": glt_x, "glt_y": glt_y, "truth": truth,
            "transform": transform, "crs": crs, "labels": made.labels, "wl": wl,
            "flags": flags}


def test_a_granule_opens_on_its_map_grid_through_the_glt(tmp_path):
    g = emit_granule(tmp_path)
    scene = open_scene(g["path"], mask="none")
    assert dict(scene.sizes) == {"band": 30, "y": 60, "x": 70}
    assert scene.rio.crs == g["crs"] and scene.rio.transform() == g["transform"]
    np.testing.assert_allclose(scene.coords["wavelength"].values, g["wl"])
    assert list(np.flatnonzero(scene.coords["bad_band"].values)) == [12, 13]
    assert scene.attrs["product"] == "EMIT L2A"
    # Every map pixel is the swath pixel its GLT names, exactly; none outside the swath.
    values, valid = read_window(scene, slice(7, 55), slice(3, 66), bands=np.arange(30))
    gx, gy = g["glt_x"][7:55, 3:66], g["glt_y"][7:55, 3:66]
    hit = (gx > 0) & (gy > 0)
    expect = g["swath"][gy[hit] - 1, gx[hit] - 1].T
    np.testing.assert_array_equal(values[:, hit & valid], expect[:, valid[hit]])
    assert not valid[~hit].any() and hit.sum() > 0.6 * hit.size
    # Orthorectified from a rotated track, the map still shows the truth it was sampled from.
    close = np.abs(values[:, valid] - g["truth"][:, 7:55, 3:66][:, valid]).max(axis=0) < 1e-6
    assert close.mean() > 0.75


def test_cloud_flags_are_nodata_by_default_and_none_keeps_them(tmp_path):
    g = emit_granule(tmp_path, cloud=(slice(20, 34), slice(10, 30)))
    masked = open_scene(g["path"])
    assert masked.attrs["quality_layers"] == "cloud,cirrus,dilated_cloud,spacecraft"
    flagged = np.asarray(masked.coords["quality_mask"])
    gx, gy = g["glt_x"], g["glt_y"]
    hit = (gx > 0) & (gy > 0)
    expect = np.zeros_like(flagged)
    expect[hit] = g["flags"][gy[hit] - 1, gx[hit] - 1, 0] == 1
    assert np.array_equal(flagged, expect) and flagged.sum() > 100
    assert masked.attrs["quality_masked_pixels"] == int(flagged.sum())
    _, valid = read_window(masked, slice(0, 60), slice(0, 70))
    _, kept = read_window(open_scene(g["path"], mask="none"), slice(0, 60), slice(0, 70))
    assert not (valid & flagged).any() and (kept & flagged).sum() == flagged.sum()
    only_cirrus = open_scene(g["path"], mask="cirrus")
    assert not np.asarray(only_cirrus.coords["quality_mask"]).any()


def test_without_the_mask_file_the_default_warns_and_an_asked_mask_is_refused(tmp_path):
    g = emit_granule(tmp_path, mask_file=False)
    with pytest.warns(UserWarning, match="no EMIT_L2A_MASK file beside it"):
        scene = open_scene(g["path"])
    assert "quality_mask" not in scene.coords
    with pytest.raises(HsimapError, match="--mask needs the granule's EMIT_L2A_MASK file"):
        open_scene(g["path"], mask="cloud")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_scene(g["path"], mask="none")


@pytest.mark.parametrize("case,message", [
    ("bad_flag", "--mask: haze is no EMIT mask flag; choose from cloud, cirrus, water, "
                 "spacecraft, dilated_cloud, aggregate (or none)"),
    ("bad_glt", "its GLT points outside the 64 x 52 swath"),
    ("no_geotransform", "no geotransform or spatial_ref attribute"),
    ("band_count", "30 bands but 29 wavelengths: a damaged file"),
    ("other_mask", "not the same granule"),
])
def test_damaged_granules_are_refused_in_one_line(tmp_path, case, message):
    import h5py

    g = emit_granule(tmp_path, bad_glt=case == "bad_glt")
    mask = "haze" if case == "bad_flag" else None
    if case in ("no_geotransform", "band_count"):
        with h5py.File(g["path"], "r+") as f:
            if case == "no_geotransform":
                del f.attrs["geotransform"]
            else:
                del f["sensor_band_parameters/wavelengths"]
                f["sensor_band_parameters/wavelengths"] = g["wl"][:-1]
    if case == "other_mask":
        other = g["path"].with_name(g["path"].name.replace("_RFL_", "_MASK_"))
        with h5py.File(other, "r+") as f:
            del f["mask"]
            f["mask"] = np.zeros((10, 10, len(MASK_BANDS)), np.float32)
    with pytest.raises(HsimapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_scene(g["path"], mask=mask)
    r = hsimap("info", g["path"], *(["--mask", mask] if mask else []))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_train_and_predict_on_a_granule_give_maps_on_its_grid(tmp_path):
    g = emit_granule(tmp_path, cloud=(slice(20, 34), slice(10, 30)))
    model, out = tmp_path / "model", tmp_path / "maps"
    r = hsimap("train", g["path"], "-l", g["labels"], "-o", model, "--steps", "6",
               "--hidden", "16", "--window", "32", "--halo", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    card = json.loads((model / "model.json").read_text())
    assert card["bands_used"] and 12 not in card["bands_used"]
    r = hsimap("predict", g["path"], "-m", model, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    scene = open_scene(g["path"])
    flagged = np.asarray(scene.coords["quality_mask"])
    outside = (g["glt_x"] == 0) | (g["glt_y"] == 0)
    for key in ("classes", "confidence", "abundances", "error"):
        with rasterio.open(out / f"{g['path'].stem}_{key}.tif") as src:
            assert src.crs == g["crs"] and src.transform == g["transform"]
            assert (src.height, src.width) == (60, 70)
            data = src.read(1)
            nodata = data == src.nodata if src.nodata is not None and \
                not np.isnan(src.nodata) else np.isnan(data)
            assert nodata[flagged].all() and nodata[outside].all(), key
            assert (~nodata).sum() > 0.5 * data.size
