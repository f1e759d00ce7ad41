"""The CLI as a user meets it: real processes, one-line errors, exit codes."""

from __future__ import annotations

import json

from tests.conftest import hsimap


def test_synth_then_info_json(tmp_path):
    r = hsimap("synth", tmp_path / "s.bsq", "--width", 40, "--height", 30, "--bands", 7,
               "--crs", "EPSG:32610", "--pixel-size", 3)
    assert r.returncode == 0, r.stderr
    r = hsimap("info", tmp_path / "s.hdr", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    for key in ("width", "height", "bands", "dtype", "crs", "transform", "wavelengths", "fwhm",
                "nodata", "bad_bands"):
        assert key in info
    assert info["crs"] == "EPSG:32610"
    assert info["transform"] == [3.0, 0.0, 500000.0, 0.0, -3.0, 4100000.0]
    assert len(info["wavelengths"]) == 7


def test_errors_are_one_line(tmp_path):
    (tmp_path / "bad.tif").write_text("nope")
    for args in (["info", tmp_path / "missing.tif"], ["info", tmp_path / "bad.tif"]):
        r = hsimap(*args)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1


def test_synth_refuses_overwrite(tmp_path):
    assert hsimap("synth", tmp_path / "s.tif", "--width", 20, "--height", 20).returncode == 0
    r = hsimap("synth", tmp_path / "s.tif", "--width", 20, "--height", 20)
    assert r.returncode == 1 and "--overwrite" in r.stderr


def test_quiet_and_verbose_on_the_group(trained, tmp_path):
    """`hsimap -q CMD` silences every command's progress bar, as `CMD --quiet` does; `-vv`
    shows the libraries' debug messages (rasterio's and GDAL's) as log lines."""
    loud = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o",
                  tmp_path / "a", "--no-quicklooks")
    quiet = hsimap("-q", "predict", trained.made.scene, "-m", trained.model_dir, "-o",
                   tmp_path / "b", "--no-quicklooks")
    assert loud.returncode == quiet.returncode == 0
    assert "px/s" in loud.stderr and quiet.stderr == ""
    plain = hsimap("info", trained.made.scene)
    verbose = hsimap("-vv", "info", trained.made.scene)
    assert plain.returncode == verbose.returncode == 0 and plain.stderr == ""
    assert "DEBUG rasterio" in verbose.stderr and verbose.stdout == plain.stdout


def test_train_command_defaults_are_train_options_defaults():
    """`hsimap train` and TrainOptions give one default per setting. The command writes its
    defaults as literals (it starts without importing torch), so this holds them equal; the
    flags default to off, and --device's "auto" is resolved before TrainOptions sees it."""
    import dataclasses

    from hsimap.cli.train import command
    from hsimap.workflows.train_options import TrainOptions

    fields = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    shared = [p for p in command.params
              if p.name in fields and not getattr(p, "is_flag", False) and p.name != "device"]
    assert {"steps", "batch", "val_every", "patience", "hidden", "window", "halo"} <= \
        {p.name for p in shared}
    for p in shared:
        assert p.default == fields[p.name], p.name
