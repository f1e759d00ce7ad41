"""One story per run (issue 27): for every classifier and output option, the outputs of one
predict agree with each other. The class map is the argmax of the probabilities it was written
with (outside ties and sieved patches), the confidence their maximum, and every file names the
classes and endmembers with the same strings."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import Trained, hsimap

KINDS = ("mamba", "svm", "rf", "auto")
OPTIONS = {"float32": ["--probabilities"],
           "uint8+mmu": ["--probabilities", "--probabilities-type", "uint8", "--mmu", "4"],
           "cog+stac": ["--probabilities", "--cog", "--stac"]}


@pytest.fixture(scope="module")
def models(trained: Trained, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kinds")
    out = {"mamba": trained.model_dir}
    for kind in KINDS[1:]:
        r = hsimap("-q", "train", trained.made.scene, "-l", trained.made.labels, "-o", d / kind,
                   "--classifier", kind, "--steps", 10, "--hidden", 32, "--window", 64,
                   "--halo", 8, "--val-every", 5, "--threads", 2)
        assert r.returncode == 0, r.stderr
        out[kind] = d / kind
    return out


def _read(path: Path, band: int | None = None):
    with rasterio.open(path) as src:
        return (src.read() if band is None else src.read(band)), src.tags()


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_output_of_a_run_tells_one_story(kind, option, models, trained, tmp_path):
    from hsimap.io.classmaps import read_class_table
    from hsimap.io.probabilities import probability_classes, read_probabilities
    from hsimap.model.store import load_model

    model = load_model(models[kind])
    out = tmp_path / "out"
    r = hsimap("-q", "predict", trained.made.scene, "-m", models[kind], "-o", out,
               "--no-quicklooks", *OPTIONS[option])
    assert r.returncode == 0, r.stderr
    classes, tags = _read(out / "scene_classes.tif", 1)
    assert tags["HSIMAP_CLASSIFIER"] == (model.card.baseline or "mamba")
    # The class map is a class map (the probabilities' tags are on their raster alone).
    from hsimap.io.classmaps import open_class_map
    from hsimap.io.probabilities import TAG_ENCODING, is_probabilities

    assert TAG_ENCODING not in tags and is_probabilities(out / "scene_probabilities.tif")
    open_class_map(out / "scene_classes.tif").close()
    conf, _ = _read(out / "scene_confidence.tif", 1)
    prob = read_probabilities(out / "scene_probabilities.tif")
    ids, prob_names = probability_classes(out / "scene_probabilities.tif")
    table = model.class_table
    assert ids == list(table.ids) and prob_names == list(table.names)

    live = classes > 0
    assert np.array_equal(live, np.isfinite(conf)) and np.array_equal(live, np.isfinite(prob[0]))
    p = prob[:, live]
    top = np.sort(p, 0)
    tol = 1.5 / 254 if "uint8" in option else 1e-6   # uint8 rounds each band by 1/508
    clear = top[-1] - top[-2] > 2 * tol
    argmax = np.asarray(ids)[np.argmax(p, 0)]
    agree = argmax == classes[live]
    if "mmu" in option:
        # Sieved patches take their neighbour's class: the map differs there, and only there.
        plain = tmp_path / "plain"
        r = hsimap("-q", "predict", trained.made.scene, "-m", models[kind], "-o", plain,
                   "--no-quicklooks")
        assert r.returncode == 0, r.stderr
        unsieved, _ = _read(plain / "scene_classes.tif", 1)
        kept = classes[live] == unsieved[live]
        assert kept.mean() > 0.9
        assert agree[clear & kept].all()
        assert (unsieved[live] == argmax)[clear].all()
    else:
        assert agree[clear].all() and clear.mean() > 0.95
    np.testing.assert_allclose(conf[live], top[-1], atol=tol)

    # Class names: the map's CLASS_NAMES, its .aux.xml categories, its .qml, the
    # probabilities' band descriptions and the STAC item all say the model's.
    assert read_class_table(out / "scene_classes.tif").names == list(table.names)
    cats = ET.parse(str(out / "scene_classes.tif") + ".aux.xml").getroot()
    names = [c.text or "" for c in cats.iter("Category")]
    assert [names[i] for i in table.ids] == list(table.names)
    qml = ET.parse(out / "scene_classes.qml").getroot()
    entries = {int(e.get("value")): e.get("label") for e in qml.iter("paletteEntry")}
    assert entries == dict(zip(table.ids, table.names, strict=True))
    if model.unmixes:
        import spectral

        bands, _ = _read(out / "scene_abundances.tif", 1)
        with rasterio.open(out / "scene_abundances.tif") as a:
            band_names = list(a.descriptions)
        lib = spectral.envi.open(str(out / "scene_endmembers.hdr"),
                                 str(out / "scene_endmembers.sli"))
        assert band_names == list(lib.names) == model.endmember_names
    if "stac" in option:
        item = json.loads((out / "scene_item.json").read_text())
        assert item["properties"]["hsimap:classifier"] == (model.card.baseline or "mamba")
        stac_classes = item["assets"]["classes"]["classification:classes"]
        assert [(c["value"], c["description"]) for c in stac_classes] == \
            list(zip(table.ids, table.names, strict=True))
        if model.unmixes:
            assert item["assets"]["abundances"]["hsimap:endmembers"] == model.endmember_names
