"""Opening real files: ENVI in every interleave, GeoTIFF from another writer, EMIT, .mat."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from hsimap.errors import HsimapError
from hsimap.io.scene import open_scene, read_window, scene_info
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import shared


@pytest.mark.parametrize("suffix,interleave", [(".img", "band"), (".bil", "line"),
                                               (".bip", "pixel"), (".tif", "pixel")])
def test_roundtrip_every_interleave(tmp_path, suffix, interleave):
    spec = SynthSpec(width=70, height=50, bands=12, endmembers=3, classes=2, seed=1,
                     crs="EPSG:32633", pixel_size=1.5, origin=(401234.5, 5012345.25),
                     nodata_edges=True)
    made = make_scene(tmp_path / f"s{suffix}", spec)
    for path in {made.scene, made.scene.with_suffix(".hdr") if suffix != ".tif" else made.scene}:
        scene = open_scene(path)
        info = scene_info(scene)
        assert info.crs == "EPSG:32633"
        assert info.transform == [1.5, 0.0, 401234.5, 0.0, -1.5, 5012345.25]
        assert (info.width, info.height, info.bands) == (70, 50, 12)
        assert info.interleave == interleave
        np.testing.assert_array_equal(info.wavelengths, np.round(made.wavelengths, 4))
        assert info.nodata == -9999
    values, valid = read_window(scene, slice(0, 50), slice(0, 70))
    with rasterio.open(made.labels) as src:
        labels = src.read(1)
    # nodata outside the strip is masked exactly where the truth has no label
    np.testing.assert_array_equal(valid, labels > 0)
    assert 0.2 < valid.mean() < 0.95
    assert np.all(values[:, ~valid] == 0)


def test_geotiff_from_another_writer_micrometres_and_scale(tmp_path):
    """A GeoTIFF written directly with rasterio, EnMAP style: per-band wavelength in µm."""
    path = tmp_path / "enmap_like.tif"
    wl_um = np.linspace(0.42, 2.40, 9)
    data = (np.arange(9 * 6 * 5).reshape(9, 6, 5) * 3).astype("int16")
    transform = Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 5800020.0)
    with rasterio.open(path, "w", driver="GTiff", width=5, height=6, count=9, dtype="int16",
                       crs=CRS.from_epsg(32632), transform=transform, nodata=-32768) as dst:
        dst.write(data)
        for b in range(9):
            dst.update_tags(b + 1, wavelength=str(wl_um[b]), wavelength_units="Micrometers")
        dst.scales = [1e-4] * 9
        dst.offsets = [0.0] * 9
    scene = open_scene(path)
    info = scene_info(scene)
    assert info.crs == "EPSG:32632"
    assert info.transform == list(transform)[:6]
    np.testing.assert_allclose(info.wavelengths, wl_um * 1000, rtol=0, atol=1e-9)
    assert info.nodata == -32768
    values, _ = read_window(scene, slice(0, 6), slice(0, 5))
    np.testing.assert_allclose(values, data * 1e-4, rtol=1e-6)


def test_emit_envi_product():
    hdr = shared("emit_unmix_example", "emit20250324t221005_jpl_unmix_ex.hdr")
    text = hdr.read_text()
    bbl_text = text.split("bbl = {")[1].split("}")[0]
    expected_bad = [i + 1 for i, v in enumerate(bbl_text.split(",")) if float(v) == 0]
    scene = open_scene(hdr)
    info = scene_info(scene)
    assert (info.width, info.height, info.bands, info.dtype) == (10, 10, 285, "float32")
    assert info.interleave == "line"
    assert len(info.wavelengths) == 285
    assert info.wavelengths[0] == pytest.approx(381.0055927)
    assert info.wavelengths[-1] == pytest.approx(2492.9238809)
    assert info.bad_bands == expected_bad and len(expected_bad) > 0
    assert info.nodata == -9999
    assert info.crs is None and not info.georeferenced


def test_emit_ignore_value_masks_pixel(tmp_path):
    """A pixel with the ignore value in one band is masked in the whole cube."""
    src_path = shared("emit_unmix_example", "emit20250324t221005_jpl_unmix_ex")
    data = np.fromfile(src_path, dtype="<f4").reshape(10, 285, 10)  # BIL: line, band, sample
    data[3, 100, 7] = -9999
    copy = tmp_path / "emit"
    data.tofile(copy)
    (tmp_path / "emit.hdr").write_text(src_path.with_suffix(".hdr").read_text())
    _, valid = read_window(open_scene(copy), slice(0, 10), slice(0, 10))
    assert not valid[3, 7] and valid.sum() == 99


def test_salinas_mat():
    scene = open_scene(shared("salinasA", "SalinasA_corrected.mat"))
    assert scene.shape == (204, 83, 86)
    info = scene_info(scene)
    assert info.crs is None and not info.georeferenced


def test_zhu_matrix_is_column_major():
    scene = open_scene(shared("samson", "samson_1.mat"))
    assert scene.shape == (156, 95, 95)
    from scipy.io import loadmat

    v = loadmat(shared("samson", "samson_1.mat"))["V"]
    # pixel (row 3, col 5) is column 5 * 95 + 3 of the MATLAB matrix
    np.testing.assert_array_equal(scene.values[:, 3, 5], v[:, 5 * 95 + 3])


def test_lazy_open_reads_nothing(tmp_path):
    made = make_scene(tmp_path / "s.tif", SynthSpec(width=64, height=64, bands=8, seed=2))
    scene = open_scene(made.scene, chunks=32)
    assert scene.data.chunks == ((8,), (32, 32), (32, 32))


@pytest.mark.parametrize("content,expect", [
    (None, "no such file"),
    (b"not a raster", "GDAL cannot read it"),
])
def test_bad_inputs(tmp_path, content, expect):
    p = tmp_path / "x.tif"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(HsimapError, match=expect):
        open_scene(p)


def test_header_without_data(tmp_path):
    (tmp_path / "lonely.hdr").write_text("ENVI\nsamples = 2\n")
    with pytest.raises(HsimapError, match="ENVI header without a data file"):
        open_scene(tmp_path / "lonely.hdr")


def test_mat_without_cube(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "x.mat", {"label": np.array([[1]])})
    with pytest.raises(HsimapError, match="no hyperspectral cube"):
        open_scene(tmp_path / "x.mat")


def test_a_scene_inside_a_zip_is_read_through_gdal_virtual_paths(trained, tmp_path):
    """/vsizip/ (and /vsicurl/, /vsis3/, s3://, which cannot be reached from here) go to GDAL
    as they are; the outputs are named after the file inside the archive."""
    import zipfile

    from tests.conftest import hsimap

    with zipfile.ZipFile(tmp_path / "lines.zip", "w") as z:
        z.write(trained.made.scene, "line7.tif")
    virtual = f"/vsizip/{tmp_path / 'lines.zip'}/line7.tif"
    r = hsimap("predict", virtual, "-m", trained.model_dir, "-o", tmp_path / "out", "--quiet",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    direct = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o",
                    tmp_path / "direct", "--quiet", "--no-quicklooks")
    assert direct.returncode == 0, direct.stderr
    import rasterio

    with rasterio.open(tmp_path / "out" / "line7_classes.tif") as a, \
            rasterio.open(tmp_path / "direct" / "scene_classes.tif") as b:
        assert (a.read() == b.read()).all() and a.transform == b.transform
    r = hsimap("info", "/vsizip/" + str(tmp_path / "lines.zip") + "/missing.tif")
    assert r.returncode == 1 and "missing.tif" in r.stderr and "Traceback" not in r.stderr
