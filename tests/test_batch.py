"""hsimap batch on a real dask.distributed LocalCluster (worker processes, loopback)."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import psutil
import pytest
import rasterio

from hsimap.io.scene import open_scene
from hsimap.synth import SynthSpec, make_scene
from hsimap.workflows.predict import write_outputs
from tests.conftest import hsimap_process

pytestmark = pytest.mark.timeout(600)


def _scenes(d, n, size=(48, 40)):
    return [make_scene(d / f"line{i}.tif", SynthSpec(width=size[0], height=size[1], bands=24,
                                                     endmembers=4, classes=4, seed=20 + i,
                                                     region_size=24)).scene
            for i in range(n)]


def _batch(*args, **kw):
    return hsimap_process("batch", *args, **kw)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.suffix in (".tif", ".sli", ".csv")}


def _manifest(out):
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_batch_matches_predict_and_isolates_failures(trained, tmp_path):
    scenes = _scenes(tmp_path, 3)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00garbage")
    other = make_scene(tmp_path / "tenbands.tif", SynthSpec(width=20, height=20, bands=10)).scene
    out = tmp_path / "out"
    p = _batch(*scenes, bad, other, "-m", trained.model_dir, "-o", out, "--jobs", 2,
               "--quiet")
    stdout, stderr = p.communicate(timeout=500)
    assert p.returncode == 1, stderr
    records = {r["scene"]: r for r in _manifest(out)}
    for s in scenes:
        assert records[str(s)]["status"] == "done"
    assert records[str(bad)]["status"] == "failed"
    assert "bands" in records[str(other)]["reason"]
    assert "failed" in stdout and str(bad) in stdout
    for s in scenes:
        direct = tmp_path / "direct" / s.stem
        write_outputs(open_scene(s), trained.model, direct, progress=False)
        assert _digests(direct) == _digests(out / s.stem)


@pytest.mark.slow
def test_sigterm_then_resume(trained, tmp_path):
    scenes = _scenes(tmp_path, 4, size=(96, 80))
    out = tmp_path / "out"
    p = _batch(*scenes, "-m", trained.model_dir, "-o", out, "--jobs", 1, "--quiet")
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "manifest.jsonl").exists() and _manifest(out):
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 143
    # One line in hsimap's voice: no dask shutdown warnings, no leaked-semaphore warning.
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines == ["Error: batch stopped by SIGTERM; rerun the same command to resume"], stderr
    first = {r["scene"] for r in _manifest(out) if r["status"] == "done"}
    assert 1 <= len(first) < 4
    # Whatever stands under a final name is complete (a scene finished after the client was
    # stopped is complete too, merely not in the manifest, and is redone on resume).
    for tif in out.glob("*/*.tif"):
        with rasterio.open(tif) as src:
            src.read()
    for partial in out.glob("*/*partial*"):
        assert partial.name.startswith(".")
    p = _batch(*scenes, "-m", trained.model_dir, "-o", out, "--jobs", 1, "--quiet")
    stdout, stderr = p.communicate(timeout=500)
    assert p.returncode == 0, stderr
    assert stdout.count("skipped") >= len(first)
    second = [r for r in _manifest(out)][len(first):]
    redone = {r["scene"] for r in second}
    assert redone.isdisjoint(first)
    assert {r["scene"] for r in _manifest(out) if r["status"] == "done"} == {str(s)
                                                                             for s in scenes}


@pytest.mark.slow
def test_killed_worker_scene_is_retried(trained, tmp_path):
    (scene,) = _scenes(tmp_path, 1, size=(400, 300))
    out = tmp_path / "out"
    p = _batch(scene, "-m", trained.model_dir, "-o", out, "--jobs", 1, "--quiet")
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        for child in psutil.Process(p.pid).children(recursive=True):
            try:
                if any(".partial-" in f.path for f in child.open_files()):
                    victim = child
                    break
            except psutil.Error:
                continue
    assert victim is not None, "the worker never started writing"
    victim.kill()
    stdout, stderr = p.communicate(timeout=500)
    assert p.returncode == 0, stderr
    (rec,) = _manifest(out)
    assert rec["status"] == "done" and rec["worker_pid"] != victim.pid
