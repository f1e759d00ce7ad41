"""The middle floor's rules, checked on the source and on behaviour (issue 20): one atomic
writer, one definition of each shared option, one place a network meets pixels, and an engine
that leaves torch to the code that runs it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from hsimap.io.speclib import read_library, write_library
from hsimap.synth import SynthSpec, make_scene
from tests.conftest import hsimap

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "hsimap").rglob("*.py")) + sorted((ROOT / "cli").rglob("*.py"))


def _calls(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            if name in names and (name != "replace" or owner == "os"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_one_atomic_writer():
    """``temp_name`` + ``os.replace`` live in io/files (``atomic_output``) and in the output
    set's staging folder only; every other writer goes through ``atomic_output``."""
    allowed = {ROOT / "hsimap/io/files.py", ROOT / "hsimap/io/outputset.py"}
    renames = [c for p in SOURCES if p not in allowed for c in _calls(p, {"replace", "rename"})]
    assert not renames
    # RasterSink's working file is a temporary name that is copied, never renamed.
    temps = [c for p in SOURCES if p not in allowed for c in _calls(p, {"temp_name"})]
    assert [t.split(":")[0] for t in temps] == ["hsimap/io/rasters.py"]


# Each shared option defined once: tests/test_first_hour.py checks every flag of every
# command against cli/options' registry (not a fixed list).


def test_synth_takes_its_output_as_every_command_does(tmp_path: Path):
    r = hsimap("-q", "synth", "-o", tmp_path / "a.tif", "--width", 8, "--height", 6, "--bands", 5)
    assert r.returncode == 0, r.stderr
    old = hsimap("-q", "synth", tmp_path / "b.tif", "--width", 8, "--height", 6, "--bands", 5)
    assert old.returncode == 0, old.stderr   # the argument, as scripts wrote it, still works
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_an_envi_synth_scene_moves_with_its_header(tmp_path: Path):
    made = make_scene(tmp_path / "line.bil", SynthSpec(width=9, height=7, bands=4))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "line.hdr" in names and "line.bil" in names
    assert not [n for n in names if n.startswith(".")]
    with rasterio.open(made.scene) as src:
        assert src.count == 4 and src.driver == "ENVI"


def test_a_failed_library_write_leaves_nothing(tmp_path: Path, monkeypatch):
    from spectral.io.envi import SpectralLibrary

    spectra = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    write_library(tmp_path / "lib", spectra, ["a", "b", "c"], np.arange(400, 460, 10.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SpectralLibrary, "save", broken)
    with pytest.raises(OSError):
        write_library(tmp_path / "lib", spectra * 2, ["a", "b", "c"], np.arange(400, 460, 10.0),
                      overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    got, names, wl = read_library(tmp_path / "lib.sli")
    np.testing.assert_allclose(got, spectra)


def test_the_unmixing_network_keeps_a_batchs_windows_apart():
    """The unmixing network takes batches as the classifier does: each window of a batch gets
    what it gets alone (``apply_window`` runs both)."""
    from hsimap.inference import Scaling, apply_window
    from hsimap.model.network import ModelConfig, UnmixingNetwork

    torch.manual_seed(0)
    net = UnmixingNetwork(ModelConfig(bands=6, classes=1, endmembers=3, variants=2, hidden=16,
                                      coord_period=16)).eval()
    rng = np.random.default_rng(1)
    windows = []
    for k in range(3):
        valid = np.ones((12, 12), bool)
        valid[: 3 * k] = False
        windows.append((rng.random((8, 12, 12)).astype(np.float32) * 1000, valid, (5 * k, 7)))
    scaling = Scaling(np.arange(1, 7), 0.0, 1000.0)
    batch = apply_window(net, scaling, windows)
    for k, w in enumerate(windows):
        alone = apply_window(net, scaling, [w])
        np.testing.assert_allclose(batch.abundances[k], alone.abundances[0], rtol=1e-5,
                                   atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(batch.error[k], alone.error[0], rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        invalid = ~w[1]
        assert np.isnan(alone.error[0][invalid]).all()
        assert np.isnan(alone.abundances[0][:, invalid]).all()
        ok = alone.abundances[0][:, w[1]]
        np.testing.assert_allclose(ok.sum(0), 1, rtol=1e-5)
    assert batch.logits is None


def test_the_engine_leaves_torch_to_the_code_that_runs_it():
    """Importing the engine (and the progress bar, and runtime) loads no torch: commands that
    never run a model start without it."""
    code = ("import sys, hsimap.engine, hsimap.progress, hsimap.runtime, hsimap.io.mosaic; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_torch_threads_are_restored_after_a_block():
    from hsimap.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_layout_doc_names_every_module():
    """docs/layout.md names each module of the package (as `io/scene`, `model/network`...)."""
    text = (ROOT / "docs" / "layout.md").read_text()
    named = set(re.findall(r"`([a-z_/]+)`", text))
    missing = []
    for path in sorted((ROOT / "hsimap").rglob("*.py")):
        rel = path.relative_to(ROOT / "hsimap").with_suffix("")
        if rel.name in ("__init__", "__main__"):
            continue
        short = str(rel).removeprefix("workflows/")
        if str(rel) not in named and short not in named:
            missing.append(str(rel))
    assert not missing
