"""EnMAP L2A products as downloaded (issue 31): the real patches in ../shared/data, with a
METADATA.XML written in the documented structure (the real band centres and FWHM of
enmap_potsdam_west) and clouds painted into a copy of the QL layer."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.io.scene import open_scene, read_window
from tests.conftest import hsimap, shared


def _tile() -> Path:
    root = shared("enmap_l2a_patches")
    return sorted(p for p in root.iterdir() if p.is_dir())[0]


def _bands() -> tuple[np.ndarray, np.ndarray]:
    img = sorted(shared("enmap_potsdam_west", "images").glob("*.tif"))[0]
    with rasterio.open(img) as src:
        wl = np.array([float(src.tags(b)["wavelength"]) for b in range(1, src.count + 1)])
        fw = np.array([float(src.tags(b)["fwhm"]) for b in range(1, src.count + 1)])
    return wl, fw


def metadata_xml(wl: np.ndarray, fw: np.ndarray, gain: float = 1e-4) -> str:
    rows = "".join(
        f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{w:.3f}</wavelengthCenterOfBand>'
        f"<FWHMOfBand>{f:.3f}</FWHMOfBand><GainOfBand>{gain}</GainOfBand>"
        f"<OffsetOfBand>0</OffsetOfBand></bandID>"
        for i, (w, f) in enumerate(zip(wl, fw, strict=True)))
    return (f'<?xml version="1.0" encoding="UTF-8"?><level_X><specific><bandCharacterisation>'
            f"{rows}</bandCharacterisation></specific></level_X>")


@pytest.fixture
def product(tmp_path) -> Path:
    """A copy of a real tile with its METADATA.XML and a cloud painted into QL_QUALITY_CLOUD."""
    src = _tile()
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    (dst / f"{src.name}-METADATA.XML").write_text(metadata_xml(*_bands()))
    cloud = dst / f"{src.name}-QL_QUALITY_CLOUD.TIF"
    with rasterio.open(cloud, "r+") as q:
        a = q.read(1)
        a[10:30, 40:70] = 1
        q.write(a, 1)
    return dst


def test_a_tile_folder_opens_with_its_bands_scale_time_and_mask(product):
    scene = open_scene(product)
    wl, fw = _bands()
    assert scene.sizes["band"] == 224 and scene.rio.crs.to_epsg() == 32618
    np.testing.assert_allclose(scene.coords["wavelength"].values, wl, atol=1e-3)
    np.testing.assert_allclose(scene.coords["fwhm"].values, fw, atol=1e-3)
    assert scene.attrs["scale_factor"] == pytest.approx(1e-4)
    assert scene.attrs["nodata"] == -32768
    assert scene.attrs["acquisition_time"] == "2022-11-03T16:24:38Z"
    assert scene.attrs["quality_masked_pixels"] == 20 * 30
    values, valid = read_window(scene, slice(0, 64), slice(0, 128))
    assert not valid[10:30, 40:70].any()
    assert valid[40:60].mean() > 0.9
    assert 0.0 < float(np.median(values[:, valid])) < 1.0   # reflectance, not x 10,000
    # The same from the SPECTRAL_IMAGE.TIF with its sidecars, and from a ZIP of the tile.
    tif = next(product.glob("*SPECTRAL_IMAGE.TIF"))
    assert open_scene(tif).attrs["quality_masked_pixels"] == 600
    z = product.parent / "tile.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in product.iterdir():
            zf.write(p, f"{product.name}/{p.name}")
    zs = open_scene(z)
    np.testing.assert_allclose(zs.coords["wavelength"].values, wl, atol=1e-3)
    assert zs.attrs["quality_masked_pixels"] == 600
    # --mask none: every pixel the image has.
    assert "quality_mask" not in open_scene(product, mask="none").coords


def test_without_metadata_it_runs_with_a_warning_and_unknown_wavelengths(tmp_path):
    with pytest.warns(UserWarning, match="no METADATA.XML beside it: wavelengths unknown"):
        scene = open_scene(_tile())
    assert np.isnan(scene.coords["wavelength"].values).all()
    assert scene.attrs["scale_factor"] == pytest.approx(1e-4)


def test_info_says_what_was_found(product):
    r = hsimap("info", product)
    assert r.returncode == 0, r.stderr
    assert "EnMAP L2A" in r.stdout and "METADATA.XML" in r.stdout
    assert "cloud" in r.stdout and "600" in r.stdout


def test_masked_pixels_are_nodata_in_every_output(product, tmp_path):
    """Train on the tile's own pixels (labels from the first bands' brightness), predict it:
    the painted cloud is nodata in the class map, confidence, abundances and error."""
    scene = open_scene(product)
    with rasterio.open(next(product.glob("*SPECTRAL_IMAGE.TIF"))) as src:
        b = src.read(40).astype(float)
        profile = src.profile
    labels = np.where(b > np.percentile(b, 50), 1, 2).astype(np.uint8)
    labels[::3, :] = 0
    lab = tmp_path / "labels.tif"
    profile.update(count=1, dtype="uint8", nodata=0)
    with rasterio.open(lab, "w", **profile) as dst:
        dst.write(labels, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = hsimap("-q", "train", product, "-l", lab, "-o", tmp_path / "m", "--steps", 2,
                   "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 1,
                   "--endmembers", 3)
    assert r.returncode == 0, r.stderr
    r = hsimap("-q", "predict", product, "-m", tmp_path / "m", "-o", tmp_path / "out",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    stem = next(product.glob("*SPECTRAL_IMAGE.TIF")).stem
    out = tmp_path / "out"
    for name, nodata_is in (("classes", lambda a: a == 0), ("confidence", np.isnan),
                            ("error", np.isnan), ("abundances", np.isnan)):
        with rasterio.open(out / f"{stem}_{name}.tif") as src:
            a = src.read()
            assert (src.crs, src.transform) == (scene.rio.crs, scene.rio.transform())
        assert nodata_is(a[:, 10:30, 40:70]).all(), name
        assert not nodata_is(a[:, 50:60, 50:60]).any(), name


def _refused(product: Path, xml: str | bytes) -> str:
    meta = next(product.glob("*METADATA.XML"))
    meta.write_bytes(xml.encode() if isinstance(xml, str) else xml)
    r = hsimap("-q", "info", product)
    assert r.returncode == 1, r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


BOMB = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
        '&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<l>&x;</l>')


@pytest.mark.parametrize("xml,message", [
    (BOMB, "a DTD or entity"),
    (EXTERNAL, "a DTD or entity"),
    ("<level_X><specific><bandCharacterisation><bandID number=", "not readable XML"),
    ("<level_X/>", "not an EnMAP L2A METADATA.XML"),
    (metadata_xml(np.arange(10) + 400.0, np.ones(10)), "describes 10 bands, the image has 224"),
], ids=["entity expansion", "external entity", "truncated", "other XML", "band count"])
def test_a_hostile_or_damaged_metadata_file_gets_one_line(product, xml, message):
    assert message in _refused(product, xml)


def test_a_missing_quality_layer_asked_for_is_named(product):
    next(product.glob("*QL_QUALITY_HAZE.TIF")).unlink()
    r = hsimap("-q", "info", product)
    assert r.returncode == 1 and "QL_QUALITY_HAZE.TIF" in r.stderr
    assert hsimap("-q", "info", product, "--mask", "cloud,cloudshadow").returncode == 0


def test_labels_under_the_mask_are_counted_and_left_out(product, tmp_path):

    from hsimap.workflows.train import TrainOptions, train

    scene = open_scene(product)
    labels = np.zeros((scene.sizes["y"], scene.sizes["x"]), np.int32)
    labels[5:60:2, 5:120:2] = 1
    labels[70:120:2, 5:120:2] = 2
    hidden = int(((labels > 0) & np.asarray(scene.coords["quality_mask"])).sum())
    assert hidden > 0
    from hsimap.classes import ClassTable

    with pytest.warns(UserWarning, match=f"{hidden:,} labelled pixels .* lie under its "
                                         "cloud,cloudshadow,haze,snow,cirrus mask"):
        train(scene, labels, ClassTable([1, 2], ["a", "b"]), tmp_path / "m",
              TrainOptions(steps=1, hidden=16, window=32, halo=4, val_every=1, endmembers=3,
                           progress=False, threads=1))

