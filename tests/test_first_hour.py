"""What a newcomer meets first: help for every option, -q everywhere, a version report for bug
reports, no doc or message that names an option no command has, and finer labels taken to the
scene grid by majority."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from hsimap.cli.main import _register, cli
from hsimap.io.labels import load_labels, majority
from tests.conftest import hsimap, shared

ROOT = Path(__file__).resolve().parents[1]
_register()

# Flags of other programs that the docs quote (GDAL's, dask's).
FOREIGN = {"--help", "--format", "--nworkers", "--nthreads", "--index-url"}
# benchmarks/classification.py's --variants name TrainOptions fields this way
VARIANTS = {"--augment", "--weight-decay"}


def _options() -> set[str]:
    names = {o for p in cli.params for o in p.opts}
    for cmd in cli.commands.values():
        for p in cmd.params:
            names.update(p.opts)
            names.update(getattr(p, "secondary_opts", []))
    for script in (ROOT / "benchmarks").glob("*.py"):  # the docs quote their runs too
        names.update(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", script.read_text()))
    return names


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_option_says_what_it_does_and_every_command_takes_q(name):
    cmd = cli.commands[name]
    silent = [p.name for p in cmd.params
              if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not silent, f"{name}: options without help text: {silent}"
    assert any("-q" in p.opts for p in cmd.params), f"{name} does not take -q"


def test_no_doc_or_message_names_an_option_that_is_not_there():
    known = _options() | FOREIGN | VARIANTS
    places = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
              *sorted((ROOT / "hsimap").rglob("*.py")), *sorted((ROOT / "cli").glob("*.py"))]
    unknown = {}
    for f in places:
        for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]+", f.read_text()):
            if m.group() not in known:
                unknown.setdefault(m.group(), set()).add(f.name)
    assert not unknown, unknown


def test_version_names_what_a_bug_report_needs():
    r = hsimap("--version")
    assert r.returncode == 0, r.stderr
    for part in ("hsimap", "python", "torch", "numba", "GDAL", "rasterio"):
        assert re.search(rf"^{part}\s+\S", r.stdout, re.M), (part, r.stdout)
    import hsimap as pkg

    assert re.search(rf"^hsimap\s+{re.escape(pkg.__version__)}$", r.stdout, re.M)


def _scene(h: int, w: int, res: float):
    import rioxarray  # noqa: F401
    import xarray as xr

    da = xr.DataArray(np.ones((3, h, w), np.float32), dims=("band", "y", "x"),
                      coords={"x": 500000 + res / 2 + res * np.arange(w),
                              "y": 4000000 - res / 2 - res * np.arange(h)})
    return da.rio.write_crs("EPSG:32611").rio.write_transform(from_origin(500000, 4000000,
                                                                          res, res))


def test_majority_is_over_half_of_the_label_pixels_unlabelled_counted():
    fine = np.array([[1, 1, 2, 0],
                     [1, 2, 2, 0],
                     [0, 0, 3, 4],
                     [0, 3, 4, 4]])
    rows, cols = np.indices(fine.shape)
    out = majority(fine, rows // 2, cols // 2, (2, 2))
    # 3 of 4 are 1; 2 and 0 twice each: no majority; 0 three times; 4 three times
    assert out.tolist() == [[1, 0], [0, 4]]


def test_a_finer_label_raster_is_taken_by_majority(tmp_path):
    h, w, k = 6, 8, 4
    rng = np.random.default_rng(3)
    # blocks of one class with some noise: majorities and mixed pixels both occur
    fine = np.kron(rng.integers(0, 4, (h, w)), np.ones((k, k), int)).astype(np.uint8)
    noise = rng.random(fine.shape) < 0.4
    fine[noise] = rng.integers(0, 4, noise.sum())
    path = tmp_path / "fine.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w * k, height=h * k, count=1,
                       dtype="uint8", crs="EPSG:32611",
                       transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(fine, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, _ = load_labels(path, _scene(h, w, k), partial=True)
    assert any("majority" in str(c.message) for c in caught)
    # Independently: count each 4 x 4 block by hand (at least 9 of 16, else unlabelled).
    blocks = fine.reshape(h, k, w, k).transpose(0, 2, 1, 3).reshape(h, w, k * k)
    for y in range(h):
        for x in range(w):
            counts = np.bincount(blocks[y, x], minlength=4)
            want = int(counts.argmax()) if counts.max() >= 9 else 0
            assert labels[y, x] == want


def test_houston_labels_on_the_4x_grid_reach_the_scene_by_majority():
    path = shared("houston2018_subset", "houston_dataset.mat")
    from hsimap.io.mat import load_mat
    from hsimap.io.scene import open_scene

    scene = open_scene(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, table = load_labels(path, scene)
    assert labels.shape == (128, 128)
    assert any("4 x 4" in str(c.message) for c in caught)
    fine = np.asarray(load_mat(path)["clasLabs"])
    # the protocol of benchmarks/classification.py: at least 9 of each 4 x 4 block
    blocks = fine.reshape(128, 4, 128, 4).transpose(0, 2, 1, 3).reshape(128, 128, 16)
    want = np.zeros((128, 128), np.int64)
    for c in range(1, 13):
        want[(blocks == c).sum(-1) >= 9] = c
    np.testing.assert_array_equal(labels, want)
    assert len(table.ids) >= 11


def test_a_class_map_written_from_python_is_styled_as_the_clis(trained, tmp_path):
    import hsimap as pkg
    from hsimap.io.classmaps import read_class_table

    scene = pkg.open_scene(trained.made.scene)
    ds = pkg.predict(scene, trained.model)
    out = pkg.write_class_map(ds.classes, tmp_path / "c.tif")
    with rasterio.open(out) as src:
        cmap = src.colormap(1)
        values = src.read(1)
        assert (src.crs, src.transform) == (scene.rio.crs, scene.rio.transform())
    table = trained.model.class_table
    assert [tuple(cmap[i][:3]) for i in table.ids] == [tuple(c) for c in table.colors]
    assert read_class_table(out).names == list(table.names)
    assert (tmp_path / "c.qml").exists() and (tmp_path / "c.tif.aux.xml").exists()
    np.testing.assert_array_equal(values, ds.classes.values)


def test_every_public_name_resolves():
    import hsimap as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, name
    # each workflow's options type beside its function
    for fn, opts in (("train", "TrainOptions"), ("predict_scene", "PredictOptions"),
                     ("unmix", "UnmixOptions"), ("sample_map", "SampleOptions"),
                     ("suggest", "SuggestOptions"), ("run_batch", "BatchOptions")):
        assert fn in pkg.__all__ and opts in pkg.__all__


# ---- the option registry --------------------------------------------------------------------

NOT_COUNTS = {"--indent", "--seed", "--halo", "--mmu", "--min-per-class", "--window",
              "--endmembers", "--patience"}   # 0 means something, or the floor is not 1
# (window 8, P 2; --patience 0 runs every step)


def _uses() -> dict[str, list[tuple[str, click.Option]]]:
    out: dict[str, list[tuple[str, click.Option]]] = {}
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                out.setdefault(p.opts[-1], []).append((name, p))
    return out


def test_a_flag_means_one_thing_or_the_registry_says_why():
    from hsimap.cli.options import SEVERAL_MEANINGS

    several = {flag: sorted(cmd for cmd, _ in uses) for flag, uses in _uses().items()
               if len({p.help for _, p in uses}) > 1}
    assert set(several) <= set(SEVERAL_MEANINGS), set(several) - set(SEVERAL_MEANINGS)


def test_a_flag_two_commands_share_is_defined_once():
    """Every flag of every command: one that another command has too comes from cli/options
    (unless the registry records that it means something else there)."""
    import ast

    from hsimap.cli.options import SEVERAL_MEANINGS

    shared = {f for f, uses in _uses().items() if len(uses) > 1} - set(SEVERAL_MEANINGS)
    spelled = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        if path.name == "options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "option":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                spelled += [f"{path.name}: {f}" for f in flags if f in shared]
    assert not spelled


def test_every_count_below_one_exits_the_same_way():
    from hsimap.cli.options import at_least_one

    counts = [(cmd, p.opts[-1]) for flag, uses in _uses().items() for cmd, p in uses
              if isinstance(p.type, click.types.IntParamType) and flag not in NOT_COUNTS]
    assert len(counts) > 15
    for cmd, flag in counts:
        p = next(q for q in cli.commands[cmd].params if flag in getattr(q, "opts", ()))
        assert p.callback is at_least_one, (cmd, flag)
    r = hsimap("train", "x.tif", "-l", "x.tif", "-o", "m", "--steps", 0)
    assert r.returncode == 2 and r.stderr.strip() == \
        "Error: Invalid value for '--steps': must be at least 1, got 0"
