"""Writers: georeferencing kept exactly, colour tables and names, COG, atomic commit."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from hsimap.classes import ClassTable
from hsimap.errors import HsimapError
from hsimap.io.classmaps import read_class_table
from hsimap.io.rasters import Grid, RasterSink, write_raster
from hsimap.io.speclib import read_library, write_library

GRID = Grid(300, 260, CRS.from_epsg(32611), Affine(2.5, 0.0, 512345.0, 0.0, -2.5, 4123456.0))


def _georef_equal(path):
    with rasterio.open(path) as src:
        assert src.crs == GRID.crs
        assert src.transform == GRID.transform
        assert (src.width, src.height) == (GRID.width, GRID.height)


@pytest.mark.parametrize("cog", [False, True])
def test_class_map(tmp_path, cog):
    table = ClassTable([1, 2, 3], ["water", "soil", "tree"], [(0, 0, 255), (150, 75, 0),
                                                               (0, 128, 0)])
    classes = np.random.default_rng(0).integers(0, 4, (260, 300)).astype("uint8")
    out = write_raster(tmp_path / "c.tif", classes, GRID, class_table=table, cog=cog)
    _georef_equal(out)
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        np.testing.assert_array_equal(src.read(1), classes)
        cmap = src.colormap(1)
        assert cmap[1][:3] == (0, 0, 255) and cmap[3][:3] == (0, 128, 0)
        assert (src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG") == cog
        if cog:
            assert src.overviews(1) == []  # small raster: GDAL makes none below 512 px
    assert read_class_table(out).names == ["water", "soil", "tree"]
    aux = ET.parse(str(out) + ".aux.xml").getroot()
    cats = [c.text or "" for c in aux.iter("Category")]
    assert cats == ["unclassified", "water", "soil", "tree"]
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(out)], capture_output=True, text=True).stdout
        assert "Categories:" in info and "water" in info and "Color Table" in info


def test_cog_with_overviews(tmp_path):
    grid = Grid(1100, 1030, GRID.crs, GRID.transform)
    a = np.random.default_rng(1).random((2, 1030, 1100)).astype("float32")
    out = write_raster(tmp_path / "a.tif", a, grid, cog=True, descriptions=["x", "y"])
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1)
        assert src.descriptions == ("x", "y")
        np.testing.assert_array_equal(src.read(), a)


def test_uint16_past_255_classes(tmp_path):
    table = ClassTable.default(range(1, 301))
    classes = (np.arange(260 * 300) % 301).reshape(260, 300).astype("uint16")
    out = write_raster(tmp_path / "c.tif", classes, GRID, class_table=table)
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "uint16"
        np.testing.assert_array_equal(src.read(1), classes)


def test_abundances_nan_nodata_descriptions(tmp_path):
    a = np.random.default_rng(2).random((3, 260, 300)).astype("float32")
    a[:, :10, :10] = np.nan
    out = write_raster(tmp_path / "ab.tif", a, GRID, descriptions=["Alunite", "Calcite", "Kaol"])
    _georef_equal(out)
    with rasterio.open(out) as src:
        assert np.isnan(src.nodata)
        assert src.descriptions == ("Alunite", "Calcite", "Kaol")
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        np.testing.assert_array_equal(src.read(), a)


def test_interrupted_write_leaves_nothing(tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(RuntimeError):
        with RasterSink(out, GRID, 1, "float32", nodata=float("nan")) as sink:
            sink.write(np.ones((1, 10, 10), "float32"), 0, 0)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_refuses_overwrite(tmp_path):
    out = tmp_path / "x.tif"
    write_raster(out, np.zeros((260, 300), "float32"), GRID)
    with pytest.raises(HsimapError, match="--overwrite"):
        write_raster(out, np.zeros((260, 300), "float32"), GRID)
    write_raster(out, np.ones((260, 300), "float32"), GRID, overwrite=True)


def test_unwritable_folder(tmp_path):
    with pytest.raises(HsimapError, match="does not exist"):
        write_raster(tmp_path / "nope" / "x.tif", np.zeros((260, 300), "float32"), GRID)


def test_spectral_library_roundtrip(tmp_path):
    import spectral.io.envi as envi

    spectra = np.random.default_rng(3).random((4, 57))
    wl = np.linspace(401.5, 2493.25, 57)
    names = ["NPV", "PV", "soil, dry", "water"]
    sli, hdr, csv_path = write_library(tmp_path / "lib", spectra, names, wl)
    lib = envi.open(str(hdr), str(sli))
    np.testing.assert_allclose(lib.spectra, spectra, atol=1e-6)
    assert lib.names == ["NPV", "PV", "soil; dry", "water"]
    np.testing.assert_allclose(lib.bands.centers, wl)
    header = hdr.read_text()
    assert "file type = ENVI Spectral Library" in header
    assert "wavelength units = Nanometers" in header
    s2, n2, wl2 = read_library(csv_path)
    np.testing.assert_allclose(s2, spectra, atol=1e-6)
    np.testing.assert_allclose(wl2, wl, rtol=1e-6)


def test_reads_berlin_library():
    from tests.conftest import shared

    spectra, names, wl = read_library(shared("spectral_libraries", "library_berlin.sli"))
    assert spectra.shape == (75, 177) and len(names) == 75 and len(wl) == 177


def test_vrt_mosaic_keeps_valid_pixels_where_lines_overlap(tmp_path):
    """Two lines overlapping by 20 columns; line A's nodata edge lies in the overlap."""
    from hsimap.io.mosaic import write_vrt

    table = ClassTable([1, 2], ["maize", "orchard"])
    a = np.ones((30, 40), np.uint8)
    a[:, 35:] = 0                                   # A's swath ends 5 px before its edge
    b = np.full((30, 40), 2, np.uint8)
    grid_a = Grid(40, 30, CRS.from_epsg(32611), Affine(2, 0, 500000, 0, -2, 4100000))
    grid_b = Grid(40, 30, CRS.from_epsg(32611), Affine(2, 0, 500040, 0, -2, 4100000))
    write_raster(tmp_path / "a_classes.tif", a, grid_a, class_table=table)
    write_raster(tmp_path / "b_classes.tif", b, grid_b, class_table=table)
    vrt = write_vrt([tmp_path / "a_classes.tif", tmp_path / "b_classes.tif"],
                    tmp_path / "mosaic.vrt")
    with rasterio.open(vrt) as src:
        m = src.read(1)
        assert src.nodata == 0 and m.shape == (30, 60)
    assert (m[:, :20] == 1).all()          # A alone
    assert (m[:, 20:35] == 1).all()        # overlap, both valid: the first map wins
    assert (m[:, 35:40] == 2).all()        # overlap, A is nodata: B's pixels stay
    assert (m[:, 40:] == 2).all()          # B alone
    cats = [c.text for c in ET.parse(vrt).getroot().iter("Category")]
    assert cats == ["unclassified", "maize", "orchard"]
