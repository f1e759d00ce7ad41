"""Silent wrong answers found by GIS clients and hostile inputs, round two (issue 19).

Two tables. ``REFUSED``: the input, the one-line message, the exit code, and what is left on
disk (what was there before, byte for byte). ``RIGHT``: inputs that hsimap used to answer
wrongly without a word, with the right answer checked.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning

from hsimap.classes import ClassTable
from hsimap.io.labels import load_labels
from hsimap.io.rasters import Grid, write_raster
from hsimap.io.scene import open_scene
from tests.conftest import Refused, Trained, hsimap, refused_in_one_line

NAMES = {1: "Roof", 2: "Water", 3: "Grass", 4: "Tree"}   # sorted by name: 3, 1, 4, 2


def _polygons(d: Path, made, names: dict[int, str] = NAMES) -> Path:
    """Squares over pixels of known truth, their class as text in ``cover``."""
    import pyogrio
    import shapely

    scene = open_scene(made.scene)
    with rasterio.open(made.labels) as src:
        truth, t = src.read(1), src.transform
    geoms, cover = [], []
    for r in range(4, truth.shape[0] - 8, 12):
        for c in range(4, truth.shape[1] - 8, 12):
            block = truth[r:r + 4, c:c + 4]
            if (block == block[0, 0]).all() and block[0, 0] in names:
                x0, y0 = t * (c, r)
                x1, y1 = t * (c + 4, r + 4)
                geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
                cover.append(names[int(block[0, 0])])
    path = d / "polys.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(np.array(geoms, dtype=object)),
                      [np.array(cover, dtype=object)], fields=["cover"], driver="GPKG",
                      geometry_type="Polygon", crs=scene.rio.crs.to_wkt())
    return path


def _csv(d: Path, rows: dict[int, str]) -> Path:
    p = d / "classes.csv"
    p.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in rows.items()))
    return p


def _label_raster(d: Path, t: Trained, values: np.ndarray, dtype: str, nodata=None) -> Path:
    scene = open_scene(t.made.scene)
    path = d / "labels.tif"
    grid = Grid.from_scene(scene)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height,
                       count=1, dtype=dtype, crs=grid.crs, transform=grid.transform,
                       nodata=nodata) as dst:
        dst.write(values.astype(dtype), 1)
    return path


def _truth(t: Trained) -> np.ndarray:
    with rasterio.open(t.made.labels) as src:
        return src.read(1)


def float_labels(d, t):
    lab = _truth(t).astype(np.float32) - 0.5
    lab[lab < 0] = 0
    return ["train", t.made.scene, "-l", _label_raster(d, t, lab, "float32"), "-o", d / "m"]


def csv_missing_a_name(d, t):
    polys = _polygons(d, t.made)
    csv = _csv(d, {1: "Roof", 2: "Water", 3: "Grass"})
    return ["train", t.made.scene, "-l", polys, "--class-field", "cover", "--classes", csv,
            "-o", d / "m"]


def csv_with_an_extra_name(d, t):
    polys = _polygons(d, t.made)
    csv = _csv(d, {**NAMES, 5: "Bare soil"})
    return ["train", t.made.scene, "-l", polys, "--class-field", "cover", "--classes", csv,
            "-o", d / "m"]


def folder_with_other_files(d, t):
    (d / "m").mkdir()
    (d / "m" / "split_truth.tif").write_bytes(b"the user's own labels")
    (d / "m" / "history.csv").write_text("mine\n")
    return ["train", t.made.scene, "-l", t.made.labels, "-o", d / "m", "--steps", 1]


def evaluate_a_confidence_raster(d, t):
    r = hsimap("predict", t.made.scene, "-m", t.model_dir, "-o", d / "p", "-q",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    return ["evaluate", d / "p" / "scene_confidence.tif", "-l", t.made.labels]


def polygons_on_unreferenced_scene(d, t):
    from scipy.io import savemat

    cube = open_scene(t.made.scene).values.transpose(1, 2, 0)
    savemat(d / "cube.mat", {"cube": cube})
    return ["train", d / "cube.mat", "-l", _polygons(d, t.made), "--class-field", "cover",
            "-o", d / "m"]


def unmix_over_a_predict_set(d, t):
    r = hsimap("predict", t.made.scene, "-m", t.model_dir, "-o", d / "out", "-q",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    return ["unmix", t.made.scene, "-o", d / "out", "-p", 3, "--method", "vca-fcls"]


def _model_copy(d: Path, t: Trained, edit) -> Path:
    import json
    import shutil

    m = d / "model"
    shutil.copytree(t.model_dir, m)
    card = json.loads((m / "model.json").read_text())
    edit(card)
    (m / "model.json").write_text(json.dumps(card))
    return m


def card_edit(edit):
    def build(d, t):
        return ["predict", t.made.scene, "-m", _model_copy(d, t, edit), "-o", d / "out"]
    return build


def weights_of_another_shape(d, t):
    from safetensors.torch import load_file, save_file

    m = _model_copy(d, t, lambda c: None)
    state = load_file(str(m / "model.safetensors"))
    state["head.weight"] = state["head.weight"][:, :-1].contiguous()
    save_file(state, str(m / "model.safetensors"))
    return ["predict", t.made.scene, "-m", m, "-o", d / "out"]


def _set(key, value):
    def edit(card):
        card[key] = value(card) if callable(value) else value
    return edit


def _classes_ids(ids):
    def edit(card):
        card["classes"]["ids"] = ids(card["classes"]["ids"])
    return edit


def header_list_too_short(d, t):
    made_dir = d / "envi"
    made_dir.mkdir()
    from hsimap.synth import SynthSpec, make_scene

    made = make_scene(made_dir / "line.bsq", SynthSpec(width=20, height=10, bands=5))
    Path(str(made.scene) + ".aux.xml").unlink(missing_ok=True)
    hdr = Path(made.scene).with_suffix(".hdr")
    text = hdr.read_text()
    start = text.index("wavelength = {")
    end = text.index("}", start)
    values = text[start + len("wavelength = {"):end].split(",")
    hdr.write_text(text[:start] + "wavelength = {" + ",".join(values[:-1]) + text[end:])
    return ["info", hdr]


def unmix_more_endmembers_than_bands(d, t):
    return ["unmix", t.made.scene, "-o", d / "out", "-p", 30, "--method", "vca-fcls"]


def vectorize_into_a_folder(d, t):
    r = hsimap("predict", t.made.scene, "-m", t.model_dir, "-o", d / "p", "-q",
               "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    (d / "dir.gpkg").mkdir()
    return ["vectorize", d / "p" / "scene_classes.tif", "-o", d / "dir.gpkg"]


def library_on_another_scale(d, t):
    from hsimap.io.speclib import write_library

    scene = open_scene(t.made.scene)
    wl = scene.coords["wavelength"].values
    spectra = np.random.default_rng(0).uniform(1000, 5000, (3, len(wl))).astype(np.float32)
    write_library(d / "lib", spectra, ["a", "b", "c"], wl)
    return ["unmix", t.made.scene, "-o", d / "out", "--library", d / "lib.sli"]


def geotiff_damaged_in_its_tags(d, t):
    """The trained scene as a GeoTIFF whose geokey tags declare impossible counts: libtiff
    skips them, and GDAL would read it as not georeferenced."""
    import struct

    src = open_scene(t.made.scene)
    path = write_raster(d / "damaged.tif", src.values, Grid.from_scene(src))
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\0"   # classic little-endian TIFF
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, _, count = struct.unpack("<HHI", data[entry:entry + 8])
        if tag in (33550, 33922, 34735):   # pixel scale, tie points, geokey directory
            data[entry + 4:entry + 8] = struct.pack("<I", count * 1_000_000)
    path.write_bytes(bytes(data))
    return ["predict", path, "-m", t.model_dir, "-o", d / "out"]


Case = Refused


REFUSED = [
    Case("float class values", float_labels, "class values must be whole numbers"),
    Case("--classes CSV without a label's name", csv_missing_a_name,
         "classes 'Tree' are not among"),
    Case("--classes CSV naming a class the labels lack", csv_with_an_extra_name,
         "names 'Bare soil', which the labels do not have"),
    Case("train -o a folder holding other files", folder_with_other_files,
         "holds other files (history.csv, split_truth.tif)"),
    Case("evaluate a confidence raster", evaluate_a_confidence_raster,
         "float32 values, not a class map"),
    Case("polygons on a scene without georeferencing", polygons_on_unreferenced_scene,
         "polygons cannot be placed on its pixels"),
    Case("unmix over a predict set without --overwrite", unmix_over_a_predict_set,
         "scene_classes.tif: exists; use --overwrite"),
    Case("model.json format hsimap-model/99", card_edit(_set("format", "hsimap-model/99")),
         "format 'hsimap-model/99', but this hsimap"),
    Case("model.json bands_used out of range",
         card_edit(_set("bands_used", lambda c: [b + 500 for b in c["bands_used"]])),
         "bands_used reach band"),
    Case("model.json with fewer class ids than outputs",
         card_edit(_classes_ids(lambda ids: ids[:-1])),
         "class ids for the 4 outputs of the network"),
    Case("model.json with a class id twice",
         card_edit(_classes_ids(lambda ids: [ids[0]] + ids[:-1])), "appear twice"),
    Case("model.json with fewer endmember names",
         card_edit(_set("endmember_names", lambda c: c["endmember_names"][:-1])),
         "endmember names for"),
    Case("weights of another shape", weights_of_another_shape,
         "size mismatch for head.weight"),
    Case("ENVI wavelength list shorter than the bands", header_list_too_short,
         "its wavelength list has 4 entries for 5 bands"),
    Case("unmix -p larger than the bands", unmix_more_endmembers_than_bands,
         "-p 30: the scene has 24 usable bands, and a linear mixture"),
    Case("vectorize -o a folder", vectorize_into_a_folder, "dir.gpkg: is a folder"),
    Case("unmix --library on another scale", library_on_another_scale,
         "times the scene's pixels"),
    Case("GeoTIFF damaged inside its tags", geotiff_damaged_in_its_tags,
         "damaged.tif: damaged TIFF tags (GeoPixelScale, GeoTiePoints, GeoKeyDirectory)"),
    # Issue 20: one output option, settings checked by the workflow (the same message and code
    # from the API and the shell).
    Case("synth with a width of 0",
         lambda d, t: ["synth", "-o", d / "s.tif", "--width", 0, "--height", 4],
         "Invalid value for '--width': must be at least 1, got 0", 2),
    Case("synth told its output twice",
         lambda d, t: ["synth", d / "a.tif", "-o", d / "b.tif", "--width", 4, "--height", 4],
         "name the scene to write once, with -o/--output", 2),
    Case("synth given one endmember",
         lambda d, t: ["synth", "-o", d / "s.tif", "--endmembers", 1],
         "need at least 1 class and 2 endmembers"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused(case: Case, trained: Trained, tmp_path: Path):
    refused_in_one_line(case.build(tmp_path, trained), case.message, case.code, tmp_path)


# ---- right answers --------------------------------------------------------------------------

def test_polygon_names_are_matched_to_the_csv_by_name(trained: Trained, tmp_path: Path):
    polys = _polygons(tmp_path, trained.made)
    scene = open_scene(trained.made.scene)
    labels, table = load_labels(polys, scene, class_field="cover",
                                classes_csv=_csv(tmp_path, NAMES))
    truth = _truth(trained)
    on = labels > 0
    assert on.sum() > 50
    assert np.array_equal(labels[on], truth[on])          # Roof is 1 as the CSV says
    assert dict(zip(table.ids, table.names, strict=True)) == NAMES


def test_label_raster_nodata_is_not_a_class(trained: Trained, tmp_path: Path):
    lab = _truth(trained).astype(np.uint8)
    lab[:, :30] = 255
    scene = open_scene(trained.made.scene)
    labels, table = load_labels(_label_raster(tmp_path, trained, lab, "uint8", 255), scene)
    assert 255 not in table.ids and not (labels == 255).any()
    assert (labels[:, :30] == 0).all()


def test_train_overwrite_replaces_only_the_models_own_files(trained: Trained, tmp_path):
    out = tmp_path / "m"
    r = hsimap("-q", "train", trained.made.scene, "-l", trained.made.labels, "-o", out,
               "--steps", 1, "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 1)
    assert r.returncode == 0, r.stderr
    (out / "split_truth.tif").write_bytes(b"the user's own labels")
    (out / "notes.txt").write_text("mine")
    r = hsimap("-q", "train", trained.made.scene, "-l", trained.made.labels, "-o", out,
               "--steps", 1, "--hidden", 16, "--window", 32, "--halo", 4, "--val-every", 1,
               "--seed", 1, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (out / "split_truth.tif").read_bytes() == b"the user's own labels"
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "split.tif").exists() and (out / "model.json").exists()


def test_unmix_overwrite_over_a_predict_set_leaves_no_class_map(trained: Trained, tmp_path):
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", tmp_path, "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "scene_classes.tif").exists()
    r = hsimap("unmix", trained.made.scene, "-o", tmp_path, "-p", 3, "--method", "vca-fcls",
               "-q", "--overwrite")
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("scene_"))
    for gone in ("classes", "confidence", "areas", "classes.png"):
        assert not any(n.startswith(f"scene_{gone}") for n in left), left
    assert "scene_abundances.tif" in left


def test_stratified_keeps_a_mapped_class_without_correct_reference(tmp_path: Path):
    """Map: classes 1, 2, 3, 100 px each. Reference (a stratified sample of 10 per stratum):
    stratum 3's pixels are all really class 1, so the reference has no pixel of class 3.
    Olofsson with all three strata (equal weights 1/3): OA = (10/10 + 10/10 + 0/10) / 3."""
    grid = Grid(30, 10, rasterio.crs.CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 0))
    table = ClassTable([1, 2, 3], ["a", "b", "c"])
    pred = np.repeat(np.array([1, 2, 3], np.uint8), 10)[None].repeat(10, 0)
    write_raster(tmp_path / "map_classes.tif", pred, grid, class_table=table)
    ref = np.zeros_like(pred, dtype=np.int32)
    ref[0, 0:10], ref[0, 10:20], ref[0, 20:30] = 1, 2, 1
    write_raster(tmp_path / "ref.tif", ref.astype(np.uint8), grid,
                 class_table=ClassTable([1, 2], ["a", "b"]))
    from hsimap.workflows.evaluate import evaluate

    ev = evaluate(tmp_path / "map_classes.tif", tmp_path / "ref.tif", stratified=True)
    assert ev.metrics.class_ids == [1, 2, 3]
    assert ev.adjusted.overall_accuracy == pytest.approx(2 / 3)
    # Areas: the whole map, 300 px of 100 m^2 = 3 ha, a third of it class 3 mapped, all a.
    assert float(ev.adjusted.area.sum()) == pytest.approx(3.0)
    assert ev.adjusted.area[0] == pytest.approx(2.0)


def _geotiff(path: Path, crs, transform, gcps=None) -> Path:
    data = np.random.default_rng(0).random((8, 40, 48), dtype=np.float32) * 0.4 + 0.05
    profile = dict(driver="GTiff", width=48, height=40, count=8, dtype="float32")
    if transform is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if gcps is not None:
            dst.gcps = (gcps, crs)
    return path


GCPS = [GroundControlPoint(0, 0, 500000, 4100000), GroundControlPoint(0, 48, 500096, 4100010),
        GroundControlPoint(40, 0, 499990, 4099920), GroundControlPoint(40, 48, 500086, 4099930)]


@pytest.mark.parametrize("kind", ["none", "gcps", "rotated"])
def test_georeferencing_is_kept_in_every_output(kind: str, tmp_path: Path):
    crs = rasterio.crs.CRS.from_epsg(32611)
    transform = {"none": None, "gcps": None,
                 "rotated": Affine(1.8, 0.9, 500000, 0.9, -1.8, 4100000)}[kind]
    src = _geotiff(tmp_path / "scene.tif", crs, transform, GCPS if kind == "gcps" else None)
    r = hsimap("unmix", src, "-o", tmp_path / "out", "-p", 3, "--method", "vca-fcls", "-q",
               "--window", 32, "--halo", 4)
    assert r.returncode == 0, r.stderr
    for tif in sorted((tmp_path / "out").glob("*.tif")):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = rasterio.open(tif)
        unreferenced = any(issubclass(w.category, NotGeoreferencedWarning) for w in seen)
        # No geotransform in, none out (an identity one would draw the map flipped in QGIS).
        assert unreferenced == (kind == "none"), tif.name
        with out, rasterio.open(src) as inp:
            assert out.transform == inp.transform, tif.name
            assert out.crs == inp.crs, tif.name
            if kind == "gcps":
                got, gcrs = out.gcps
                assert gcrs == crs and [(g.row, g.col, g.x, g.y) for g in got] == \
                    [(g.row, g.col, g.x, g.y) for g in GCPS]


# Runs the CLI and prints, at exit, whether torch was imported.
TORCH_PROBE = ("import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in "
               "sys.modules)); sys.argv = ['hsimap'] + sys.argv[1:]; "
               "from hsimap.cli.main import main; main()")


def test_info_and_help_start_without_torch(small_scene, tmp_path: Path):
    """info, --help and evaluate need no torch; a torch that cannot load must not stop them."""
    import subprocess
    import sys

    for args in (["info", str(small_scene.scene)], ["--help"], ["train", "--help"]):
        r = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("TORCH False"), (args, r.stdout[-200:])


# A refused option is said before torch is imported (a second, not three; issue 30): the
# command's options are checked by their one owner, then the model's machinery is loaded.
BEFORE_TORCH = [
    (["train", "{scene}", "-l", "{labels}", "-o", "{out}", "--seed", "-1"],
     "--seed must be non-negative, got -1"),
    (["train", "{scene}", "-l", "{labels}", "-o", "{out}", "--patience", "-1"],
     "--patience must be 0 or more, got -1"),
    (["predict", "{scene}", "-m", "{model}", "-o", "{out}", "--co", "COMPRESS=NOPE"],
     "'NOPE' is an unexpected value for COMPRESS"),
    (["unmix", "{scene}", "-o", "{out}", "--co", "FOO=1"],
     "driver GTiff does not support creation option FOO"),
]


@pytest.mark.parametrize("argv, message", BEFORE_TORCH, ids=[" ".join(a[:1] + a[-2:])
                                                              for a, _ in BEFORE_TORCH])
def test_a_refused_option_is_said_before_torch_loads(small_scene, tmp_path: Path, argv,
                                                     message):
    import subprocess
    import sys

    (tmp_path / "model").mkdir()
    names = {"scene": small_scene.scene, "labels": small_scene.labels,
             "model": tmp_path / "model", "out": tmp_path / "out"}
    args = [str(a).format(**names) for a in argv]
    r = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("Error: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout.strip().endswith("TORCH False"), r.stdout[-200:]
    assert not (tmp_path / "out").exists()


def test_vrt_mosaic_carries_names_and_a_style(tmp_path: Path):
    from hsimap.io.classmaps import read_class_table
    from hsimap.io.mosaic import write_vrt

    table = ClassTable([1, 2, 3], ["roof", "water", "tree"])
    paths = []
    for k in range(2):
        grid = Grid(20, 10, rasterio.crs.CRS.from_epsg(32633),
                    Affine(2, 0, 500000 + 30 * k, 0, -2, 0))
        a = np.full((10, 20), k + 1, np.uint8)
        paths.append(write_raster(tmp_path / f"m{k}_classes.tif", a, grid, class_table=table))
    vrt = write_vrt(paths, tmp_path / "mosaic.vrt")
    assert read_class_table(vrt).names == ["roof", "water", "tree"]
    assert (tmp_path / "mosaic.qml").exists()
    assert "roof" in (tmp_path / "mosaic.qml").read_text()
    assert vrt.read_text().count("<Entry ") == 4          # 0..3, not a 256-entry legend
    r = hsimap("vectorize", vrt, "-o", tmp_path / "m.gpkg")
    assert r.returncode == 0, r.stderr
    import pyogrio

    _, _, _, fields = pyogrio.raw.read(tmp_path / "m.gpkg")
    assert set(fields[1]) == {"roof", "water"}


def test_manifest_record_naming_no_outputs_is_not_done(tmp_path: Path):
    from hsimap.workflows.batch import is_complete

    sig = {"size": 1}
    rec = {"status": "done", "model_hash": "h", "input": sig, "options": {}, "outputs": {}}
    assert not is_complete(rec, sig, "h")
    gone = {"classes": {"path": str(tmp_path / "gone_classes.tif")}}
    assert not is_complete({**rec, "outputs": gone}, sig, "h")


def test_stac_datetime_is_the_acquisition_and_the_aux_is_an_asset(trained: Trained, tmp_path):
    pystac = pytest.importorskip("pystac")
    import shutil

    src = tmp_path / "line.tif"
    shutil.copy(trained.made.scene, src)
    with rasterio.open(src, "r+") as dst:
        dst.update_tags(start_time="2023-06-01T10:21:33Z")
    r = hsimap("predict", src, "-m", trained.model_dir, "-o", tmp_path / "out", "-q",
               "--no-quicklooks", "--stac", "--cog")
    assert r.returncode == 0, r.stderr
    item = pystac.Item.from_file(str(tmp_path / "out" / "line_item.json"))
    assert item.datetime.isoformat() == "2023-06-01T10:21:33+00:00"
    assert item.properties["hsimap:datetime_source"] == "acquisition"
    hrefs = {Path(a.href).name: a for a in item.assets.values()}
    assert "line_classes.tif.aux.xml" in hrefs
    assert hrefs["line_classes.tif"].media_type.endswith("profile=cloud-optimized")


def test_a_wavelength_check_that_cannot_be_made_is_said(trained: Trained):
    from hsimap.inference import check_compatible

    scene = open_scene(trained.made.scene)
    bare = scene.assign_coords(wavelength=("band", np.full(scene.sizes["band"], np.nan)))
    with pytest.warns(UserWarning, match="no wavelengths: only the band count"):
        check_compatible(bare, trained.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible(scene, trained.model)   # both have wavelengths: checked, silent


def test_synth_envi_header_names_the_scene_not_its_temporary_file(tmp_path: Path):
    from hsimap.synth import SynthSpec, make_scene

    made = make_scene(tmp_path / "line.bsq", SynthSpec(width=16, height=12, bands=4))
    header = Path(made.scene).with_suffix(".hdr").read_text()
    assert "description = {hsimap synth scene line.bsq" in header
    assert "partial" not in header


def test_a_failed_batch_scene_leaves_no_folder(trained: Trained, tmp_path: Path):
    from hsimap.workflows.batch import BatchOptions, process_scene

    # It opens, and fails inside the predict (3 bands for a 24-band model), after the
    # scene's folder was made.
    bad = _geotiff(tmp_path / "broken.tif", rasterio.crs.CRS.from_epsg(32611),
                   Affine(2, 0, 500000, 0, -2, 4100000))
    rec = process_scene(str(bad), str(trained.model_dir), str(tmp_path / "out" / "broken"),
                        BatchOptions())
    assert rec["status"] == "failed" and "bands" in rec["reason"], rec
    assert not (tmp_path / "out" / "broken").exists()


def _mat_v73(path: Path, shape: tuple[int, ...], data: np.ndarray | None = None) -> Path:
    """A MATLAB v7.3 file (HDF5 behind MATLAB's 512-byte header) holding one array ``cube``
    of MATLAB shape ``shape`` (h5py stores it reversed); unwritten: fill values only."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        if data is None:
            f.create_dataset("cube", shape=shape[::-1], dtype="float32", chunks=(1, 64, 64))
        else:
            f.create_dataset("cube", data=data.T)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")
    return path


def test_info_on_a_mat_reads_its_headers_only(tmp_path: Path):
    """A 2 KB .mat declaring a 3.2 GB cube: info gives its size from the headers, and never
    reads the cube (it used to hold 3.5 GB resident)."""
    import subprocess
    import sys

    path = _mat_v73(tmp_path / "big.mat", (2000, 2000, 200))
    assert path.stat().st_size < 100_000
    # The peak of the command's own address space (VmHWM, read as it exits): a child's
    # ru_maxrss also counts the test worker's pages it was forked from, before its exec.
    probe = ("import atexit, sys; atexit.register(lambda: sys.stderr.write(next(ln for ln in "
             "open('/proc/self/status') if ln.startswith('VmHWM')))); "
             "sys.argv = ['hsimap'] + sys.argv[1:]; from hsimap.cli.main import main; main()")
    r = subprocess.run([sys.executable, "-c", probe, "info", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "2000 x 2000 px, 200 bands, float32" in r.stdout
    peak_kib = int(r.stderr.split("VmHWM:")[1].split()[0])
    assert peak_kib < 1_000_000, r.stderr  # < 1 GB, where reading the cube takes 3.2 GB


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_a_mat_cube_read_lazily_equals_the_array_written(version: str, tmp_path: Path):
    """Found from the headers, read on first use: the same (band, row, col) values either
    way, for a (rows, cols, bands) cube and a bands x pixels matrix with nRow/nCol."""
    from scipy.io import savemat

    cube = np.random.default_rng(0).random((20, 30, 5)).astype(np.float32)
    if version == "v5":
        savemat(tmp_path / "c.mat", {"cube": cube})
        path = tmp_path / "c.mat"
    else:
        path = _mat_v73(tmp_path / "c.mat", cube.shape, cube)
    np.testing.assert_array_equal(open_scene(path).values, np.moveaxis(cube, 2, 0))
    matrix = np.moveaxis(cube, 2, 0).reshape(5, 600, order="F")  # Zhu's column-major pixels
    savemat(tmp_path / "m.mat", {"Y": matrix, "nRow": 20, "nCol": 30})
    np.testing.assert_array_equal(open_scene(tmp_path / "m.mat").values,
                                  np.moveaxis(cube, 2, 0))
