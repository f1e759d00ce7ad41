"""Streaming prediction: seams, georeferencing, nodata, determinism, bad input."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import rasterio

import hsimap
from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene
from hsimap.products import output_paths
from hsimap.synth import SynthSpec, make_scene
from hsimap.windows import tiles
from hsimap.workflows.predict import write_outputs
from tests.conftest import hsimap as hsimap_cli
from tests.conftest import run


def _predict(trained, out, **kw):
    scene = open_scene(trained.made.scene)
    return write_outputs(scene, trained.model, out, progress=False, quicklooks=False, **kw)


def _read(path, band=None):
    with rasterio.open(path) as src:
        return src.read() if band is None else src.read(band)


def _boundary_mask(shape, window, halo, reach=2):
    """Pixels within ``reach`` px of a core boundary of the tile grid."""
    m = np.zeros(shape, dtype=bool)
    for t in tiles(shape[0], shape[1], window, halo):
        for r in (t.core_row, t.core_row + t.core_height):
            m[max(0, r - reach):r + reach, :] |= True
        for c in (t.core_col, t.core_col + t.core_width):
            m[:, max(0, c - reach):c + reach] |= True
    return m


def test_windows_tile_the_scene_exactly():
    for h, w, win, halo in [(140, 160, 64, 8), (1000, 37, 128, 16), (50, 50, 64, 8),
                            (1, 20000, 64, 8)]:
        cover = np.zeros((h, w), int)
        grid = tiles(h, w, win, halo)
        for t in grid:
            cover[t.core_rows, t.core_cols] += 1
            assert t.height * t.width <= win * win          # a window's area at most
            assert t.row <= t.core_row and t.core_row + t.core_height <= t.row + t.height
        assert np.all(cover == 1)
        if min(h, w) < win < max(h, w):   # a strip: windows as long as a window's area allows
            long = max(max(t.height, t.width) for t in grid)
            assert long == min(max(h, w), win * win // min(h, w))


def test_seams_two_window_grids_agree(trained, tmp_path):
    a = _predict(trained, tmp_path / "a", window=64, halo=8)
    b = _predict(trained, tmp_path / "b", window=48, halo=10)
    ca, cb = _read(a.paths["classes"], 1), _read(b.paths["classes"], 1)
    valid = ca > 0
    assert np.array_equal(valid, cb > 0)
    differ = (ca != cb) & valid
    assert differ[valid].mean() < 0.01
    near = (_boundary_mask(ca.shape, 64, 8) | _boundary_mask(ca.shape, 48, 10)) & valid
    far = valid & ~near
    rate_near = differ[near].mean()
    rate_far = differ[far].mean()
    assert rate_near <= rate_far + 0.005, (rate_near, rate_far)
    # Abundances come from a pixel's 3 x 3 neighbourhood only: no seams at all.
    aa, ab = _read(a.paths["abundances"]), _read(b.paths["abundances"])
    np.testing.assert_allclose(aa[:, valid], ab[:, valid], atol=1e-5)


def test_outputs_keep_georeferencing_and_nodata(trained, tmp_path):
    report = _predict(trained, tmp_path / "o")
    with rasterio.open(trained.made.scene) as src:
        crs, transform, size = src.crs, src.transform, (src.width, src.height)
    with rasterio.open(trained.made.labels) as src:
        inside = src.read(1) > 0
    for key in ("classes", "abundances", "confidence", "error"):
        with rasterio.open(report.paths[key]) as dst:
            assert dst.crs == crs and dst.transform == transform
            assert (dst.width, dst.height) == size
            data = dst.read()
            if key == "classes":
                assert dst.nodata == 0 and np.all(data[0][~inside] == 0)
                assert np.all(data[0][inside] > 0)
            else:
                assert np.isnan(dst.nodata)
                assert np.all(np.isnan(data[:, ~inside]))
                assert np.all(np.isfinite(data[:, inside]))
    ab = _read(report.paths["abundances"])
    np.testing.assert_allclose(ab[:, inside].sum(0), 1.0, atol=1e-4)
    conf = _read(report.paths["confidence"], 1)
    assert np.nanmin(conf) > 0 and np.nanmax(conf) <= 1
    import spectral.io.envi as envi

    lib = envi.open(str(report.paths["library_hdr"]), str(report.paths["library_sli"]))
    p = trained.model.config.endmembers
    assert lib.spectra.shape == (p, 24) and len(lib.bands.centers) == 24


def _digest(paths):
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()
            if p.suffix in (".tif", ".sli", ".csv")}


def test_deterministic_across_runs_and_workers(trained, tmp_path):
    one = _digest(_predict(trained, tmp_path / "w1", workers=1).paths)
    two = _digest(_predict(trained, tmp_path / "w2", workers=2).paths)
    again = _digest(_predict(trained, tmp_path / "w2b", workers=2).paths)
    assert one == two == again


def test_batched_windows_give_the_maps_of_one_window_at_a_time(trained):
    """The GPU path (several windows per forward pass), run on the CPU."""
    scene = open_scene(trained.made.scene)
    one = hsimap.predict(scene, trained.model).compute(scheduler="synchronous")
    many = hsimap.predict(scene, trained.model, batch=3).compute(scheduler="synchronous")
    assert (one.classes.values == many.classes.values).mean() > 0.999
    np.testing.assert_allclose(many.abundances.values, one.abundances.values, atol=1e-5,
                               equal_nan=True)
    np.testing.assert_allclose(many.confidence.values, one.confidence.values, atol=1e-5,
                               equal_nan=True)


def test_python_api_is_lazy(trained):
    scene = open_scene(trained.made.scene)
    ds = hsimap.predict(scene, trained.model)
    p = trained.model.config.endmembers
    assert ds.classes.shape == (140, 160) and ds.abundances.shape == (p, 140, 160)
    assert ds.rio.crs == scene.rio.crs
    part = ds.classes[:20, :30].compute()
    assert part.shape == (20, 30)


def test_cog_outputs(trained, tmp_path):
    report = _predict(trained, tmp_path / "c", cog=True)
    with rasterio.open(report.paths["classes"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def _one_line_error(r, text):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert text in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("Error")]) == 1


def test_cli_bad_inputs_leave_no_outputs(trained, tmp_path):
    other = make_scene(tmp_path / "other.tif", SynthSpec(width=40, height=30, bands=10, seed=1))
    out = tmp_path / "out"
    _one_line_error(hsimap_cli("predict", other.scene, "-m", trained.model_dir, "-o", out),
                    "10 bands, the model was trained on 24")
    assert not out.exists() or not any(out.iterdir())
    _one_line_error(hsimap_cli("predict", trained.made.scene, "-m", tmp_path, "-o", out),
                    "no model.safetensors")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: cannot make a folder unwritable")
        _one_line_error(hsimap_cli("predict", trained.made.scene, "-m",
                                   trained.model_dir, "-o", locked), "not writable")
    finally:
        locked.chmod(0o700)


def test_cli_existing_outputs_refused(trained, tmp_path):
    out = tmp_path / "o"
    r = hsimap_cli("predict", trained.made.scene, "-m", trained.model_dir, "-o", out,
                   "--quiet")
    assert r.returncode == 0, r.stderr
    assert all(p.exists() for p in output_paths(out, "scene").values())
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    _one_line_error(hsimap_cli("predict", trained.made.scene, "-m", trained.model_dir,
                               "-o", out), "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_unwritable_output_is_an_error(trained, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(HsimapError, match="not a folder"):
        _predict(trained, f)


MEMORY_SCRIPT = """
import resource, sys
from hsimap.io.scene import open_scene
from hsimap.model.store import load_model
from hsimap.workflows.predict import write_outputs
write_outputs(open_scene(sys.argv[1]), load_model(sys.argv[2]), sys.argv[3], progress=False,
              quicklooks=False, workers=2)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_bounded_by_window_not_scene(trained, tmp_path):
    """Predicting a scene 16x larger raises peak RSS by less than 20%."""
    peaks = []
    for side in (128, 512):
        made = make_scene(tmp_path / f"s{side}.tif",
                          SynthSpec(width=side, height=side, bands=24, endmembers=4, seed=2))
        r = run([sys.executable, "-c", MEMORY_SCRIPT, made.scene, trained.model_dir,
                 tmp_path / f"o{side}"])
        assert r.returncode == 0, r.stderr
        peaks.append(int(r.stdout.split()[-1]))
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_python_api_classes_keep_their_table_through_rioxarray(trained, tmp_path):
    """hsimap.predict gives classes as uint8 with nodata 0 and the class table in attrs;
    rio.to_raster writes a map that hsimap (and GDAL) read back with its classes."""
    from hsimap.io.classmaps import read_class_table

    ds = hsimap.predict(hsimap.open_scene(trained.made.scene), trained.model)
    assert ds.classes.dtype == np.uint8
    ds.classes.rio.to_raster(tmp_path / "api.tif")
    table = read_class_table(tmp_path / "api.tif")
    assert table == trained.model.class_table
    with rasterio.open(tmp_path / "api.tif") as src:
        assert src.nodata == 0 and src.dtypes[0] == "uint8"
        assert (src.read(1) == ds.classes.values).all()
        assert (src.read(1) == 0).any()      # the scene's nodata border stays nodata
    r = hsimap_cli("evaluate", tmp_path / "api.tif", "-l", trained.made.labels, "--json")
    assert r.returncode == 0, r.stderr
