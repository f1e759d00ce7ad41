"""Every benchmark script runs end to end on a reduced setting, so none can rot.

The figures they print at full settings are in docs/benchmarks.md; here only the shape of the
output is checked, plus the sanity of what a tiny run can already show.
"""

from __future__ import annotations

import importlib
import re

import pytest

from tests.conftest import shared


def _run(module: str, argv: list[str], capsys) -> str:
    importlib.import_module(module).main(argv)
    return capsys.readouterr().out


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line]


def test_unmixing_benchmark(capsys):
    shared("samson", "samson_1.mat")
    out = _run("unmixing", ["--seeds", "0", "--epochs", "3", "--scenes", "samson"], capsys)
    methods = [r[1] for r in _rows(out)[1:]]
    assert methods == ["hsimap", "hsimap-network", "vca-fcls", "vca-affine-fcls",
                       "purified-fcls", "purified-sclsu"]
    for row in _rows(out)[1:]:
        deg, rad = float(row[2].split()[0]), float(row[3].split()[0])
        assert 0 <= deg < 90 and abs(rad - deg * 3.141592653589793 / 180) < 1e-3
        assert 0 <= float(row[5].split()[0]) < 1


def test_classification_benchmark(capsys):
    shared("salinasA", "SalinasA_corrected.mat")
    out = _run("classification", ["--scenes", "salinas", "--seeds", "0", "--steps", "1",
                                  "--variants", "hsimap"], capsys)
    rows = {r[1]: r for r in _rows(out) if len(r) == 8 and r[0] == "salinas"}
    assert set(rows) == {"SVM (RBF)", "random forest", "hsimap", "auto"}
    assert float(rows["SVM (RBF)"][3]) > 0.9  # 30 pixels per class already separate SalinasA
    # One step leaves hsimap untrained: auto keeps a baseline, and scores as it does.
    assert rows["auto"][3] in (rows["SVM (RBF)"][3], rows["random forest"][3])
    assert "Per-class test accuracy" in out


def test_classifier_unmixing_benchmark(capsys):
    out = _run("classifier_unmixing", ["--seeds", "0", "--size", "64", "--bands", "32",
                                       "--epochs", "3", "--unmix-epochs", "3", "--window",
                                       "64", "--halo", "8", "--hidden", "32"], capsys)
    assert [r[0] for r in _rows(out)[1:]] == ["hsimap predict", "hsimap unmix", "vca-fcls"]


@pytest.mark.slow  # a benchmark's smoke run (30-45 s); run by hand with -m slow
def test_train_speed_benchmark(capsys):
    shared("salinasA", "SalinasA_corrected.mat")
    out = _run("train_speed", ["--scenes", "salinas", "--steps", "2"], capsys)
    row = _rows(out)[1]
    assert row[0] == "salinas" and row[3].endswith("x") and float(row[2]) > 0


@pytest.mark.slow  # a benchmark's smoke run (30-45 s); run by hand with -m slow
def test_predict_benchmark(capsys):
    out = _run("predict", ["--sizes", "48", "--bands", "16", "--hidden", "16", "--workers",
                           "1", "--memory-sizes", "40"], capsys)
    rows = _rows(out)
    assert [r[1] for r in rows[1:3]] == ["fused", "pscan"]
    assert rows[1][0].startswith("48 x 48") and float(rows[1][2].replace(",", "")) > 0
    assert "fused / pscan end-to-end speed" in out and rows[-1][0].startswith("40 x 40")


@pytest.mark.timeout(300)
@pytest.mark.slow  # a benchmark's smoke run (30-45 s); run by hand with -m slow
def test_batch_benchmark(capsys):
    out = _run("batch", ["--scenes", "2", "--size", "48", "--bands", "16", "--hidden", "16"],
               capsys)
    assert len(_rows(out)) == 4 and re.search(r"efficiency 1 -> 2 workers: \d", out)


@pytest.mark.slow  # a benchmark's smoke run (about a minute); run by hand with -m slow
def test_classifier_predict_benchmark(capsys):
    out = _run("classifier_predict", ["--size", "48", "--bands", "12"], capsys)
    rows = {r[0]: r for r in _rows(out)[1:]}
    assert set(rows) == {"mamba", "svm", "rf"}
    assert all(float(r[3].replace(",", "")) > 0 for r in rows.values())
