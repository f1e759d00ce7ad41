"""Hostile inputs, one row each: the input, the one-line message, the exit code, and what is
left on disk (nothing new under the output, or the previous output set untouched).

Each row builds its input in a temporary folder and runs the real CLI in a real process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsimap.classes import ClassTable
from hsimap.io.rasters import Grid, write_raster
from hsimap.io.scene import open_scene
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import Trained, copy_model, hsimap


@dataclass
class Case:
    name: str
    build: Callable[[Path, Trained], list]   # -> the CLI arguments
    message: str
    code: int = 1


def _envi(d: Path) -> Path:
    made = make_scene(d / "line.bsq", SynthSpec(width=20, height=10, bands=5))
    Path(str(made.scene) + ".aux.xml").unlink(missing_ok=True)
    return Path(made.scene)


def truncated_envi(d, _):
    data = _envi(d)
    data.write_bytes(data.read_bytes()[:3000])
    return ["info", data.with_suffix(".hdr")]


def envi_wrong_data_type(d, _):
    data = _envi(d)
    hdr = data.with_suffix(".hdr")
    hdr.write_text(hdr.read_text().replace("data type = 4", "data type = 5"))
    return ["info", hdr]


def envi_wrong_offset(d, _):
    data = _envi(d)
    hdr = data.with_suffix(".hdr")
    hdr.write_text(hdr.read_text().replace("header offset = 0", "header offset = 128"))
    return ["info", hdr]


def predict(*extra):
    def build(d, t):
        return ["predict", t.made.scene, "-m", t.model_dir, "-o", d / "out", "--quiet", *extra]
    return build


def train(*extra):
    def build(d, t):
        return ["train", t.made.scene, "-l", t.made.labels, "-o", d / "out", "--quiet", *extra]
    return build


def unmix(*extra):
    def build(d, t):
        return ["unmix", t.made.scene, "-o", d / "out", "--quiet", *extra]
    return build


def huge_class_id(d, t):
    scene = open_scene(t.made.scene)
    labels = np.zeros((scene.sizes["y"], scene.sizes["x"]), np.int32)
    labels[10:20, 10:20], labels[30:40, 30:40] = 1, 70000
    with rasterio.open(d / "labels.tif", "w", driver="GTiff", width=labels.shape[1],
                       height=labels.shape[0], count=1, dtype="int32",
                       crs=scene.rio.crs, transform=scene.rio.transform()) as dst:
        dst.write(labels, 1)
    return ["train", t.made.scene, "-l", d / "labels.tif", "-o", d / "out", "--quiet"]


def narrow_library(d, t):
    from hsimap.io.speclib import write_library

    write_library(d / "lib", np.full((4, 3), 0.3, np.float32), list("abcd"),
                  np.array([500.0, 600.0, 700.0]))
    return ["unmix", t.made.scene, "-o", d / "out", "--quiet", "--library", d / "lib.sli"]


def card_missing_keys(d, t):
    m = copy_model(d, t)
    card = json.loads((m / "model.json").read_text())
    del card["scaling"], card["bands_used"]
    (m / "model.json").write_text(json.dumps(card))
    return ["predict", t.made.scene, "-m", m, "-o", d / "out"]


def card_wrong_type(d, t):
    m = copy_model(d, t)
    card = json.loads((m / "model.json").read_text())
    card["window"] = "large"
    (m / "model.json").write_text(json.dumps(card))
    return ["predict", t.made.scene, "-m", m, "-o", d / "out"]


def nan_weights(d, t):
    from safetensors.torch import load_file, save_file

    m = copy_model(d, t)
    state = load_file(str(m / "model.safetensors"))
    state["head.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(m / "model.safetensors"))
    return ["predict", t.made.scene, "-m", m, "-o", d / "out"]


def _rewrite(d: Path, t: Trained, name: str, convert) -> Path:
    """The trained scene with its values converted, tags (wavelengths) and grid kept."""
    with rasterio.open(t.made.scene) as src:
        cube, profile = src.read(), src.profile
        tags = [src.tags(b) for b in range(1, src.count + 1)]
    data, profile_update = convert(cube)
    profile.update(profile_update)
    with rasterio.open(d / name, "w", **profile) as dst:
        dst.write(data)
        for b, tg in enumerate(tags, start=1):
            dst.update_tags(b, **tg)
    return d / name


def int16_without_scale(d, t):
    def convert(cube):
        data = np.where(np.isfinite(cube), np.round(cube * 10000), -32768).astype(np.int16)
        return data, {"dtype": "int16", "nodata": -32768}
    return ["predict", _rewrite(d, t, "x10000.tif", convert), "-m", t.model_dir, "-o",
            d / "out"]


def all_nodata(d, t):
    return ["predict", _rewrite(d, t, "empty.tif", lambda c: (np.full_like(c, np.nan), {})),
            "-m", t.model_dir, "-o", d / "out"]


def csv_into_missing_folder(d, t):
    scene = open_scene(t.made.scene)
    # Classes named as the truth's, so that only the report path is wrong.
    write_raster(d / "map.tif", np.ones((scene.sizes["y"], scene.sizes["x"]), np.uint8),
                 Grid.from_scene(scene),
                 class_table=ClassTable([1, 2, 3, 4], [f"mixture {i}" for i in range(1, 5)]))
    return ["evaluate", d / "map.tif", "-l", t.made.labels, "--csv", d / "nope" / "cm.csv"]


def envi_byte_swapped(d, _):
    data = _envi(d)
    hdr = data.with_suffix(".hdr")
    hdr.write_text(hdr.read_text().replace("byte order = 0", "byte order = 1"))
    return ["train", hdr, "-l", d / "line_labels.tif", "-o", d / "out", "--steps", 1,
            "--endmembers", 3]


def byte_swapped_values(d, t):
    """Values as a reader decodes them with the wrong byte order."""
    return ["predict", _rewrite(d, t, "swapped.tif", lambda c: (c.byteswap(), {})),
            "-m", t.model_dir, "-o", d / "out"]


def truncated_geotiff(d, t):
    big = make_scene(d / "big.tif", SynthSpec(width=300, height=300, bands=24, seed=1))
    for extra in (big.labels, big.abundances):
        shutil.rmtree(extra, ignore_errors=True) if extra.is_dir() else extra.unlink()
    data = big.scene.read_bytes()
    big.scene.write_bytes(data[: len(data) // 2])
    return ["predict", big.scene, "-m", t.model_dir, "-o", d / "out", "--ignore-wavelengths"]


def geojson_utm_without_crs(d, t):
    ring = [[500010, 4099990], [500040, 4099990], [500040, 4099960], [500010, 4099960],
            [500010, 4099990]]
    (d / "fields.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": 1},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return ["train", t.made.scene, "-l", d / "fields.geojson", "-o", d / "out"]


def scale_factor_not_a_number(d, _):
    data = _envi(d)
    hdr = data.with_suffix(".hdr")
    hdr.write_text(hdr.read_text() + "reflectance scale factor = abc\n")
    return ["info", hdr]


def mat_shape_mismatch(d, _):
    from scipy.io import savemat

    savemat(d / "cube.mat", {"Y": np.ones((5, 1200), np.float32), "nRow": 30, "nCol": 50})
    return ["info", d / "cube.mat"]


def mat_v73_declaring_134_gib(d, _):
    """A 2 KB MATLAB v7.3 (HDF5) file whose one array declares 134 GiB of fill values."""
    import h5py

    path = d / "crafted.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("cube", shape=(200, 12000, 15000), dtype="float32",
                         chunks=(1, 64, 64))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")
    return ["info", path]


CASES = [
    Case("truncated ENVI", truncated_envi, "the file is truncated or the header's data type"),
    Case("ENVI header, wrong data type", envi_wrong_data_type, "bands of float64"),
    Case("ENVI header, wrong offset", envi_wrong_offset, "after a 128-byte offset"),
    Case("predict --window 0", predict("--window", 0), "window must be at least 8 px"),
    # A count below 1 is a usage error (click's exit code 2) for every count of every
    # command; one line all the same: the usage block is not printed.
    Case("predict --workers 0", predict("--workers", 0),
         "Invalid value for '--workers': must be at least 1", 2),
    Case("predict --workers -3", predict("--workers", -3),
         "Invalid value for '--workers': must be at least 1, got -3", 2),
    Case("train --val-every 0", train("--val-every", 0),
         "Invalid value for '--val-every': must be at least 1", 2),
    Case("train --hidden 0", train("--hidden", 0),
         "Invalid value for '--hidden': must be at least 1", 2),
    Case("train --variants 0", train("--variants", 0),
         "Invalid value for '--variants': must be at least 1", 2),
    Case("train --seed -1", train("--seed", -1), "--seed must be non-negative"),
    Case("train --threads -2", train("--threads", -2),
         "Invalid value for '--threads': must be at least 1", 2),
    Case("train, class id 70000", huge_class_id, "class id 70000 is outside 1-65,535"),
    Case("unmix --epochs 0", unmix("--epochs", 0),
         "Invalid value for '--epochs': must be at least 1", 2),
    Case("unmix --epochs -5", unmix("--epochs", -5),
         "Invalid value for '--epochs': must be at least 1, got -5", 2),
    Case("unmix --workers 0", unmix("--workers", 0),
         "Invalid value for '--workers': must be at least 1", 2),
    Case("unmix, library not covering the scene", narrow_library, "covers 500-700 nm"),
    Case("model.json missing keys", card_missing_keys, "missing bands_used, scaling"),
    Case("model.json wrong type", card_wrong_type, "not an hsimap model card (ValueError"),
    Case("NaN weights", nan_weights, "weights hold NaN or infinite values"),
    Case("evaluate --csv into a missing folder", csv_into_missing_folder,
         "folder does not exist"),
    Case("int16 x 10,000 scene, no scale metadata", int16_without_scale,
         "other units (reflectance x 10,000?)"),
    Case("all-nodata scene", all_nodata, "nothing to predict"),
    Case("ENVI header, wrong byte order", envi_byte_swapped,
         "which no sensor writes; is the header's byte order or data type right?"),
    Case("byte-swapped values", byte_swapped_values, "which no sensor writes"),
    Case("truncated GeoTIFF", truncated_geotiff, "the file is truncated or damaged"),
    Case("GeoJSON in UTM without a CRS", geojson_utm_without_crs,
         "which are not longitude and latitude, but the file's CRS is WGS84"),
    Case("reflectance scale factor = abc", scale_factor_not_a_number,
         "reflectance scale factor = 'abc' is not a number"),
    Case(".mat rows x columns not its pixels", mat_shape_mismatch,
         "declares 30 rows x 50 columns = 1,500 px, but 'Y' holds 1,200 pixels"),
    Case(".mat v7.3 declaring 134 GiB", mat_v73_declaring_134_gib,
         "its arrays declare 134.1 GiB"),
    Case("predict --co COMPRESS=NOPE", predict("--co", "COMPRESS=NOPE"),
         "'NOPE' is an unexpected value for COMPRESS"),
    Case("unmix --co FOO=1", unmix("--co", "FOO=1"),
         "driver GTiff does not support creation option FOO"),
    Case("predict --cog --co BLOCKSIZE=abc", predict("--cog", "--co", "BLOCKSIZE=abc"),
         "BLOCKSIZE takes an integer"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, trained: Trained, tmp_path: Path):
    args = case.build(tmp_path, trained)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = hsimap(*args)
    assert r.returncode == case.code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    assert case.message in lines[0], lines[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written, not even an empty output folder


def test_dotted_scene_names_keep_their_outputs_apart(trained: Trained, tmp_path: Path):
    """flight.2023.06.01 and flight.2023.06.02 share a prefix up to their last dot: each keeps
    its own library (with_suffix made both flight.2023.06.sli)."""
    for name in ("flight.2023.06.01.tif", "flight.2023.06.02.tif"):
        shutil.copy(trained.made.scene, tmp_path / name)
        r = hsimap("predict", tmp_path / name, "-m", trained.model_dir, "-o", tmp_path / "out",
                   "--quiet", "--no-quicklooks")
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    for day in ("01", "02"):
        for ext in ("sli", "hdr", "csv"):
            assert f"flight.2023.06.{day}_endmembers.{ext}" in names
    assert not any(n.startswith("flight.2023.06.sli") or n == "flight.2023.06.hdr"
                   for n in names)


def test_a_scene_named_with_dots_only_stays_in_the_output_folder(trained: Trained, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(trained.made.scene, src / "...tif")
    r = hsimap("predict", src / "...tif", "-m", trained.model_dir, "-o", tmp_path / "out",
               "--quiet", "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert "scene_classes.tif" in written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_scene_name_cannot_inject_envi_header_keys(trained: Trained, tmp_path: Path):
    evil = tmp_path / "x}\nbbl = {0"
    evil.mkdir()
    shutil.copy(trained.made.scene, evil / "line.tif")
    from hsimap.io.speclib import write_library

    write_library(tmp_path / "lib", np.ones((2, 3), np.float32), ["a", "b"], None,
                  description=f"hsimap endmembers of {evil}}}\nbbl = {{0, 0, 0}}")
    header = (tmp_path / "lib.hdr").read_text()
    assert "\nbbl" not in header
    from spectral.io import envi

    lib = envi.open(str(tmp_path / "lib.hdr"), str(tmp_path / "lib.sli"))
    assert lib.spectra.shape == (2, 3) and "bbl" not in lib.metadata
