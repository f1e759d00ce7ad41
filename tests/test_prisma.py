"""PRISMA L2D products as downloaded (issue 31): one HDF5-EOS file, VNIR and SWIR cubes as
scaled integers in decreasing wavelength, a geocoded UTM grid given by its corner pixels.

No real product fits in the repository, so one is written in the layout of ASI's PRISMA
Products Specification Document (issue 2.3): class regions on a real UTM grid, each class a
real EMIT spectrum (../shared/data/emit_unmix_example) resampled to PRISMA-like band centres,
quantised with the product's per-detector scales, a no-data corner (DN 0 in every band) as on
a rotated acquisition, and error-matrix flags. The tests check the reader against that
construction (grid from the synthetic scene's transform, spectra from the resampled truth),
not against the reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene, read_window
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import hsimap, refused_in_one_line, shared

SWATH = "HDFEOS/SWATHS/PRS_L2D_HCO"
VNIR_WL = np.linspace(1010.0, 402.0, 66)                  # the cube's order: decreasing
SWIR_WL = np.concatenate([np.linspace(2497.0, 920.0, 172), [0.0]])   # last slot: no band
SCALES = {"Vnir": (0.0, 0.8), "Swir": (0.0, 0.6)}


def _real_emit() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scene = open_scene(shared("emit_unmix_example", "emit20250324t221005_jpl_unmix_ex.hdr"))
    cube = np.asarray(scene.data).reshape(scene.sizes["band"], -1)
    return cube, scene.coords["wavelength"].values, ~scene.coords["bad_band"].values


def prisma_product(d: Path, *, level: str = "L2D") -> dict:
    """Write PRS_<level>_STD_...he5 into ``d``; return what the tests check against."""
    import h5py

    made = make_scene(d / "truth.tif", SynthSpec(width=70, height=60, bands=8, classes=4,
                                                 region_size=24, crs="EPSG:32633",
                                                 pixel_size=30.0, origin=(402000.0, 4650000.0),
                                                 seed=5))
    with rasterio.open(made.labels) as src:
        labels, transform, crs = src.read(1), src.transform, src.crs
    real, wl, good = _real_emit()
    order = np.argsort(real[good].mean(axis=0))
    spectra = np.stack([real[:, q].mean(axis=1) for q in np.array_split(order, 4)])
    # Resampled onto the PRISMA centres (interpolating across EMIT's water-vapour gaps).
    on = lambda centres: np.stack([np.interp(centres, wl[good], s[good]) for s in spectra])  # noqa: E731
    rows, cols = labels.shape
    rng = np.random.default_rng(5)
    noise = 1 + 0.02 * rng.standard_normal((rows, cols))
    outside = np.add.outer(np.arange(rows), np.arange(cols)) < 14      # a no-data corner
    stem = f"PRS_{level}_STD_20230714100729_20230714100733_0001"
    path = d / f"{stem}.he5"
    cubes, truths = {}, {}
    for name, centres in (("Vnir", VNIR_WL), ("Swir", SWIR_WL)):
        refl = on(centres)[np.maximum(labels, 1) - 1] * noise[..., None]   # (rows, cols, slots)
        lo, hi = SCALES[name]
        dn = np.clip(np.rint((refl - lo) / (hi - lo) * 65535), 1, 65535).astype(np.uint16)
        dn[:, :, centres == 0] = 0
        dn[outside] = 0
        cubes[name] = dn.transpose(0, 2, 1)                                  # (rows, slots, cols)
        truths[name] = lo + dn.astype(np.float64) * (hi - lo) / 65535
    errors = {n: np.zeros_like(c, dtype=np.uint8) for n, c in cubes.items()}
    errors["Vnir"][5:9, 30, 40:46] = 4          # saturated in one VNIR band
    errors["Swir"][40:44, 100, 10:14] = 1       # invalid L1 pixels in one SWIR band
    errors["Swir"][50:53, 60, 50:55] = 2        # negative after the correction
    errors["Swir"][20:23, 172, 20:25] = 1       # in the empty slot: no band, no flag
    with h5py.File(path, "w") as f:
        fields = f.create_group(f"HDFEOS/SWATHS/PRS_{level}_HCO/Data Fields")
        for name in ("Vnir", "Swir"):
            fields.create_dataset(f"{name.upper()}_Cube", data=cubes[name], chunks=True)
            fields[f"{name.upper()}_PIXEL_L2_ERR_MATRIX"] = errors[name]
        f.attrs["List_Cw_Vnir"] = VNIR_WL.astype(np.float32)
        f.attrs["List_Fwhm_Vnir"] = np.where(VNIR_WL > 0, 10.0, 0).astype(np.float32)
        f.attrs["List_Cw_Swir"] = SWIR_WL.astype(np.float32)
        f.attrs["List_Fwhm_Swir"] = np.where(SWIR_WL > 0, 11.0, 0).astype(np.float32)
        flags = np.ones(len(SWIR_WL), np.int8)
        flags[np.argmin(np.abs(SWIR_WL - 1400))] = 0                          # water vapour
        f.attrs["List_Cw_Swir_Flags"] = flags
        for name, (lo, hi) in SCALES.items():
            f.attrs[f"L2Scale{name}Min"], f.attrs[f"L2Scale{name}Max"] = lo, hi
        f.attrs["Epsg_Code"] = np.int32(32633)
        # The corners are the corner pixels' centres.
        f.attrs["Product_ULcorner_easting"] = transform.c + 15.0
        f.attrs["Product_ULcorner_northing"] = transform.f - 15.0
        f.attrs["Product_LRcorner_easting"] = transform.c + 30.0 * cols - 15.0
        f.attrs["Product_LRcorner_northing"] = transform.f - 30.0 * rows + 15.0
        f.attrs["Product_StartTime"] = np.bytes_("2023-07-14T10:07:29.123")
    # The truth in wavelength order: VNIR increasing, then SWIR above the last VNIR centre.
    v = np.argsort(VNIR_WL)
    s = [i for i in np.argsort(SWIR_WL) if SWIR_WL[i] > VNIR_WL.max()]
    truth = np.concatenate([truths["Vnir"][:, :, v], truths["Swir"][:, :, s]], axis=2)
    flagged = np.zeros((rows, cols), bool)
    flagged[5:9, 40:46] = flagged[40:44, 10:14] = True                   # invalid, saturated
    return {"path": path, "labels": made.labels, "label_map": labels, "transform": transform,
            "crs": crs, "truth": truth.transpose(2, 0, 1), "outside": outside,
            "flagged": flagged, "negative": (slice(50, 53), slice(50, 55)),
            "wl": np.concatenate([VNIR_WL[v], SWIR_WL[s]]),
            "dropped": int(((SWIR_WL > 0) & (SWIR_WL <= VNIR_WL.max())).sum()),
            "water_band": int(np.flatnonzero(np.concatenate([VNIR_WL[v], SWIR_WL[s]])
                                             == SWIR_WL[np.argmin(np.abs(SWIR_WL - 1400))])[0])}


def test_a_product_opens_on_its_grid_with_the_detectors_merged_in_wavelength_order(tmp_path):
    p = prisma_product(tmp_path)
    scene = open_scene(p["path"], mask="none")
    bands = len(p["wl"])
    assert dict(scene.sizes) == {"band": bands, "y": 60, "x": 70}
    assert bands == 66 + 172 - p["dropped"] and p["dropped"] >= 5
    # The grid: the synthetic scene's, which the corners (pixel centres) were written from.
    assert scene.rio.crs == p["crs"] and scene.rio.transform() == p["transform"]
    np.testing.assert_allclose(scene.coords["wavelength"].values, p["wl"], rtol=1e-6)
    assert np.all(np.diff(scene.coords["wavelength"].values) > 0)
    assert np.flatnonzero(scene.coords["bad_band"].values).tolist() == [p["water_band"]]
    assert scene.attrs["acquisition_time"] == "2023-07-14T10:07:29.123"
    assert f"{p['dropped']} SWIR bands" in scene.attrs["bands_merged"]
    values, valid = read_window(scene, slice(0, 60), slice(0, 70), bands=np.arange(bands))
    assert np.array_equal(valid, ~p["outside"])
    # The truth was built on the label map's rows and columns: equality is the orientation
    # (a transposed or flipped cube fails here), the band order and the per-detector scales.
    np.testing.assert_allclose(values[:, valid], p["truth"][:, valid], atol=1e-6)


def test_error_matrix_flags_are_nodata_by_default_and_the_mask_option_chooses(tmp_path):
    p = prisma_product(tmp_path)
    scene = open_scene(p["path"])
    assert scene.attrs["quality_layers"] == "invalid,saturated"
    flagged = np.asarray(scene.coords["quality_mask"])
    assert np.array_equal(flagged, p["flagged"])
    assert scene.attrs["quality_masked_pixels"] == p["flagged"].sum()
    _, valid = read_window(scene, slice(0, 60), slice(0, 70))
    assert not (valid & flagged).any()
    negative = np.asarray(open_scene(p["path"], mask="negative").coords["quality_mask"])
    expect = np.zeros_like(negative)
    expect[p["negative"]] = True
    assert np.array_equal(negative, expect)
    assert "quality_mask" not in open_scene(p["path"], mask="none").coords


def _damage(p: dict, case: str) -> None:
    import h5py

    if case in ("level", "truncated", "cloud_flag"):
        return
    with h5py.File(p["path"], "r+") as f:
        fields = f[f"{SWATH}/Data Fields"]
        if case == "no_wavelengths":
            del f.attrs["List_Cw_Swir"]
        elif case == "short_list":
            f.attrs["List_Fwhm_Vnir"] = np.ones(60, np.float32)
        elif case == "other_swir":
            del fields["SWIR_Cube"]
            fields["SWIR_Cube"] = np.ones((59, 173, 70), np.uint16)
        elif case == "corners":
            f.attrs["Product_LRcorner_easting"] = f.attrs["Product_LRcorner_easting"] + 600
        elif case == "epsg":
            f.attrs["Epsg_Code"] = np.int32(1)
        elif case == "scale":
            f.attrs["L2ScaleSwirMax"] = 0.0
        elif case == "no_errors":
            del fields["VNIR_PIXEL_L2_ERR_MATRIX"]


@pytest.mark.parametrize("case,mask,message", [
    ("level", None, "a PRISMA L2C product, in the sensor's geometry; hsimap reads PRISMA L2D"),
    ("truncated", None, "cannot read it as HDF5"),
    ("no_wavelengths", None, "no List_Cw_Swir attribute; not a complete PRISMA L2D product"),
    ("short_list", None, "the VNIR cube has 66 bands but List_Cw_Vnir 66 and List_Fwhm_Vnir "
                         "60 values"),
    ("other_swir", None, "VNIR_Cube is 70 x 60 px, SWIR_Cube 70 x 59: not one scene"),
    ("corners", None, "do not make square pixels over 70 x 60 px: a damaged product"),
    ("epsg", None, "Epsg_Code 1 is no EPSG code"),
    ("scale", None, "L2ScaleSwirMax (0) is not above L2ScaleSwirMin (0)"),
    ("no_errors", None, "no VNIR_PIXEL_L2_ERR_MATRIX; give --mask none"),
    ("cloud_flag", "cloud", "--mask: cloud is no PRISMA L2D quality flag; choose from invalid, "
                            "negative, saturated (or none; PRISMA L2D has no cloud mask)"),
])
def test_damaged_products_are_refused_in_one_line_and_leave_nothing(tmp_path, trained, case,
                                                                      mask, message):
    p = prisma_product(tmp_path, level="L2C" if case == "level" else "L2D")
    if case == "truncated":
        data = p["path"].read_bytes()
        p["path"].write_bytes(data[:len(data) // 3])
    _damage(p, case)
    with pytest.raises(HsimapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_scene(p["path"], mask=mask)
    extra = ["--mask", mask] if mask else []
    refused_in_one_line(["info", p["path"], *extra], message, 1, tmp_path)
    if case in ("level", "truncated", "corners", "cloud_flag"):
        # predict opens the scene through the same reader: a few rows show it refuses before
        # writing anything (each run costs a process start).
        refused_in_one_line(["predict", p["path"], "-m", trained.model_dir, "-o",
                             tmp_path / "maps", *extra], message, 1, tmp_path)


def test_train_predict_evaluate_on_a_product_give_maps_on_its_grid(tmp_path):
    p = prisma_product(tmp_path)
    model, out = tmp_path / "model", tmp_path / "maps"
    r = hsimap("info", p["path"])
    assert r.returncode == 0, r.stderr
    assert "PRISMA L2D" in r.stdout and "Masked:" in r.stdout and "Bands from:" in r.stdout
    assert "2023-07-14T10:07:29.123" in r.stdout
    r = hsimap("train", p["path"], "-l", p["labels"], "-o", model, "--steps", "40",
               "--hidden", "16", "--window", "32", "--halo", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    card = json.loads((model / "model.json").read_text())
    np.testing.assert_allclose(card["scene_wavelengths"], p["wl"], rtol=1e-6)
    assert p["water_band"] not in card["bands_used"]
    r = hsimap("predict", p["path"], "-m", model, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    stem = p["path"].stem
    gone = p["flagged"] | p["outside"]
    for key in ("classes", "confidence", "abundances", "error"):
        with rasterio.open(out / f"{stem}_{key}.tif") as src:
            assert src.crs == p["crs"] and src.transform == p["transform"]
            assert "Epsg_Code" in src.tags()["HSIMAP_GRID"]
            data = src.read(1)
            nodata = data == src.nodata if src.nodata is not None and \
                not np.isnan(src.nodata) else np.isnan(data)
            assert np.array_equal(nodata, gone), key
    hdr = (out / f"{stem}_endmembers.hdr").read_text()
    assert "wavelength = {" in hdr and f"{p['wl'][0]:.1f}" in hdr
    r = hsimap("evaluate", out / f"{stem}_classes.tif", "-l", p["labels"], "--json")
    assert r.returncode == 0, r.stderr
    with rasterio.open(out / f"{stem}_classes.tif") as src:
        mapped = src.read(1)
    labelled = p["label_map"] > 0
    expect = float((mapped == p["label_map"])[labelled].mean())
    assert json.loads(r.stdout)["overall_accuracy"] == pytest.approx(expect, abs=1e-9)
    assert float((mapped == p["label_map"])[labelled & ~gone].mean()) > 0.35  # chance 0.25
