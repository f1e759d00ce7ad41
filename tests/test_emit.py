"""EMIT L2A granules as downloaded (issue 31): a netCDF4 reflectance file in swath geometry with
its geometry lookup table, and the mask product beside it.

No real granule fits in the repository, so one is made in the documented layout: class regions
on a real CRS, each class a real EMIT spectrum (../shared/data/emit_unmix_example, with its
wavelengths, FWHM and good bands), are the map truth; the swath samples it along a rotated,
mirrored and rescaled track, as the ISS's ground track crosses a map grid; the GLT maps every
map pixel back to its nearest swath pixel (0 outside the swath), so it flips, repeats and skips.
The tests check the orthorectification against that construction, not against the reader.
Written with h5py's dimension scales, so that netCDF readers (GDAL's too) see the dimensions.
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
from tests.conftest import hsimap, shared

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


def _real_emit() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The real EMIT L2A crop of ../shared/data/emit_unmix_example: (285, 100) spectra, the
    wavelengths, FWHM and good-band flags of its header."""
    scene = open_scene(shared("emit_unmix_example",
                              "emit20250324t221005_jpl_unmix_ex.hdr"))
    cube = np.asarray(scene.data).reshape(scene.sizes["band"], -1)
    return (cube, scene.coords["wavelength"].values, scene.coords["fwhm"].values,
            ~scene.coords["bad_band"].values)


def emit_granule(d: Path, *, angle: float = 14.0, cloud: tuple[slice, slice] | None = None,
                 mask_file: bool = True, bad_glt: bool = False) -> dict:
    """Write EMIT_L2A_RFL_..nc (and _MASK_) into ``d``; return the arrays the tests check.

    The map truth: the class regions of a synthetic scene on EPSG:4326, each class a real EMIT
    spectrum (the mean of a quarter of the real crop's pixels, by brightness) with 2% noise.
    The swath samples it along a track at ``angle`` degrees, 1.2 map pixels per swath pixel
    along track (so the GLT repeats swath pixels) and 0.9 across (so it skips some), mirrored
    across track (so the GLT flips)."""
    import h5py

    made = make_scene(d / "truth.tif", SynthSpec(width=70, height=60, bands=8, classes=4,
                                                 region_size=24, crs="EPSG:4326",
                                                 pixel_size=0.000542,
                                                 origin=(-112.30, 36.10), seed=4))
    with rasterio.open(made.labels) as src:
        labels = src.read(1)
        transform, crs = src.transform, src.crs
    real, wl, fwhm, good = _real_emit()
    order = np.argsort(real[good].mean(axis=0))
    classes = np.stack([real[:, q].mean(axis=1) for q in np.array_split(order, 4)])
    rng = np.random.default_rng(4)
    rows, cols = labels.shape
    truth = classes[np.maximum(labels, 1) - 1].transpose(2, 0, 1).astype(np.float32)
    truth *= (1 + 0.02 * rng.standard_normal(truth.shape)).astype(np.float32)
    bands = truth.shape[0]
    a = math.radians(angle)
    down, cross, along, across = 56, 62, 1.2, 0.9
    i, j = np.meshgrid(np.arange(down), np.arange(cross), indexing="ij")
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    u, v = (i - (down - 1) / 2) * along, ((cross - 1 - j) - (cross - 1) / 2) * across  # mirrored
    rr = np.rint(cy + u * math.cos(a) - v * math.sin(a)).astype(int)
    cc = np.rint(cx + u * math.sin(a) + v * math.cos(a)).astype(int)
    inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
    swath = np.full((down, cross, bands), -9999.0, np.float32)
    swath[inside] = truth[:, rr[inside], cc[inside]].T
    # The GLT: each map pixel's nearest swath pixel (the inverse mapping), 1-based.
    R, C = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # noqa: N806
    uu = (R - cy) * math.cos(a) + (C - cx) * math.sin(a)
    vv = -(R - cy) * math.sin(a) + (C - cx) * math.cos(a)
    ii = np.rint(uu / along + (down - 1) / 2).astype(int)
    jj = (cross - 1) - np.rint(vv / across + (cross - 1) / 2).astype(int)
    on = (ii >= 0) & (ii < down) & (jj >= 0) & (jj < cross)
    glt_y = np.where(on, ii + 1, 0).astype(np.int32)
    glt_x = np.where(on, jj + 1, 0).astype(np.int32)
    if bad_glt:
        glt_y[0, 0] = down + 5
    stem = "EMIT_L2A_RFL_001_20240501T181500_2412212_004"
    path = d / f"{stem}.nc"
    with h5py.File(path, "w") as f:
        dims = _nc_dims(f, {"downtrack": down, "crosstrack": cross, "bands": bands,
                            "ortho_y": rows, "ortho_x": cols})
        v = f.create_dataset("reflectance", data=swath, chunks=(16, 16, bands))
        v.attrs["_FillValue"] = np.float32(-9999)
        _attach(v, dims, ["downtrack", "crosstrack", "bands"])
        g = f.create_group("sensor_band_parameters")
        g["wavelengths"], g["fwhm"] = wl.astype(np.float32), fwhm.astype(np.float32)
        g["good_wavelengths"] = good.astype(np.uint8)
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
    return {"path": path, "swath": swath, "glt_x": glt_x, "glt_y": glt_y, "labels": made.labels,
            "label_map": labels, "classes": classes, "transform": transform, "crs": crs,
            "wl": wl, "good": good, "flags": flags, "down": down, "cross": cross}


def test_a_granule_opens_on_its_map_grid_through_the_glt(tmp_path):
    g = emit_granule(tmp_path)
    scene = open_scene(g["path"], mask="none")
    assert dict(scene.sizes) == {"band": 285, "y": 60, "x": 70}
    assert scene.rio.crs == g["crs"] and scene.rio.transform() == g["transform"]
    np.testing.assert_allclose(scene.coords["wavelength"].values, g["wl"], rtol=1e-6)
    assert np.array_equal(~scene.coords["bad_band"].values, g["good"])
    assert scene.attrs["product"] == "EMIT L2A" and "GLT" in scene.attrs["grid"]
    # The GLT flips, repeats and skips swath pixels: all three are exercised.
    hit = (g["glt_x"] > 0) & (g["glt_y"] > 0)
    pairs = g["glt_y"][hit].astype(np.int64) * 1000 + g["glt_x"][hit]
    assert len(np.unique(pairs)) < hit.sum()                       # repeats
    assert len(np.unique(pairs)) < g["down"] * g["cross"] * 0.9    # skips
    assert np.diff(g["glt_x"][30][hit[30]]).mean() < 0             # flips across track
    # Every map pixel is the swath pixel its GLT names: computed here from the raw arrays.
    values, valid = read_window(scene, slice(7, 55), slice(3, 66), bands=np.arange(285))
    gx, gy = g["glt_x"][7:55, 3:66], g["glt_y"][7:55, 3:66]
    hit = (gx > 0) & (gy > 0)
    expect = g["swath"][gy[hit] - 1, gx[hit] - 1].T
    np.testing.assert_array_equal(values[:, hit & valid], expect[:, valid[hit]])
    assert not valid[~hit].any() and hit.sum() > 0.6 * hit.size
    # On the map, a pixel shows its own class's spectrum: a shift or a flip of the grid would
    # put other classes' spectra there along every region's edge.
    good = g["good"]
    nearest = np.argmin(np.linalg.norm(values[good][:, valid].T[:, None, :]
                                       - g["classes"][:, good][None], axis=2), axis=1) + 1
    truth = g["label_map"][7:55, 3:66][valid]
    assert (nearest == truth).mean() > 0.9


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
    ("bad_glt", "its GLT points outside the 56 x 62 swath"),
    ("no_geotransform", "no geotransform or spatial_ref attribute"),
    ("band_count", "285 bands but 284 wavelengths: a damaged file"),
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


def test_train_predict_evaluate_on_a_granule_give_maps_on_its_grid(tmp_path):
    g = emit_granule(tmp_path, cloud=(slice(20, 34), slice(10, 30)))
    model, out = tmp_path / "model", tmp_path / "maps"
    r = hsimap("info", g["path"])
    assert r.returncode == 0 and "EMIT L2A" in r.stdout and "Masked:" in r.stdout
    r = hsimap("train", g["path"], "-l", g["labels"], "-o", model, "--steps", "40",
               "--hidden", "16", "--window", "32", "--halo", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    card = json.loads((model / "model.json").read_text())
    assert set(card["bands_used"]) == set(np.flatnonzero(g["good"]).tolist())
    np.testing.assert_allclose(card["scene_wavelengths"], g["wl"], rtol=1e-6)
    r = hsimap("predict", g["path"], "-m", model, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    scene = open_scene(g["path"])
    flagged = np.asarray(scene.coords["quality_mask"])
    outside = (g["glt_x"] == 0) | (g["glt_y"] == 0)
    stem = g["path"].stem
    for key in ("classes", "confidence", "abundances", "error"):
        with rasterio.open(out / f"{stem}_{key}.tif") as src:
            assert src.crs == g["crs"] and src.transform == g["transform"]
            assert (src.height, src.width) == (60, 70)
            assert "GLT" in src.tags()["HSIMAP_GRID"]
            data = src.read(1)
            nodata = data == src.nodata if src.nodata is not None and \
                not np.isnan(src.nodata) else np.isnan(data)
            assert nodata[flagged].all() and nodata[outside].all(), key
            assert (~nodata).sum() > 0.5 * data.size
    hdr = (out / f"{stem}_endmembers.hdr").read_text()
    assert "wavelength = {" in hdr and f"{g['wl'][1]:.2f}"[:5] in hdr
    r = hsimap("evaluate", out / f"{stem}_classes.tif", "-l", g["labels"], "--json")
    assert r.returncode == 0, r.stderr
    # Scored on the map grid: every labelled pixel, those outside the swath or under cloud
    # (nodata in the map) counting as misses; computed here from the two rasters.
    with rasterio.open(out / f"{stem}_classes.tif") as src:
        mapped = src.read(1)
    labelled = g["label_map"] > 0
    expect = float((mapped == g["label_map"])[labelled].mean())
    assert json.loads(r.stdout)["overall_accuracy"] == pytest.approx(expect, abs=1e-9)
    assert float((mapped == g["label_map"])[labelled & (mapped > 0)].mean()) > 0.35  # chance 0.25
