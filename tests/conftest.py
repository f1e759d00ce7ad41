"""Shared fixtures and helpers: real data paths, small synthetic scenes written through GDAL,
a trained model, and the one way tests run hsimap as a user does (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Each pytest-xdist worker (make test runs two on the two cores) gets a core of its own, before
# torch is imported: hsimap sizes torch's, the scan's and BLAS's threads and its dask workers
# from the cores a process may use, so two workers each sized for the whole machine ran four
# threads or more on two cores, and a shared run took far longer than two runs alone. The
# commands tests start inherit the mask. Tests that exercise several threads say so with
# explicit counts (--workers 2, threads=2), which still run.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _CORES = sorted(os.sched_getaffinity(0))
    if len(_CORES) >= int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.sched_setaffinity(0, {_CORES[int(_WORKER[2:]) % len(_CORES)]})

from hsimap.model.store import TrainedModel  # noqa: E402  (after the core is chosen)
from hsimap.synth import SynthScene, SynthSpec, make_scene  # noqa: E402
from hsimap.workflows.train import TrainResult  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run(argv: list, *, cwd: Path | None = None, env: dict | None = None,
        timeout: float | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """A real process, its output captured as text."""
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, preexec_fn=preexec_fn)


def hsimap(*args: object, **kw) -> subprocess.CompletedProcess:
    """``hsimap ARGS`` as a user runs it (``python -m hsimap``, this interpreter)."""
    return run([sys.executable, "-m", "hsimap", *args], **kw)


def _as_a_shell_starts_it() -> None:
    """SIGINT and SIGTERM delivered and at their default, as a shell starts a command. A
    child inherits ignored signals and the forking thread's signal mask; a library in the
    test process may leave either changed (joblib's loky blocks both around its own spawns),
    and the child would then not hear the signal a test sends it."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def hsimap_process(*args: object, **kw) -> subprocess.Popen:
    """``hsimap ARGS`` started, not awaited: for tests that signal or kill it."""
    kw.setdefault("preexec_fn", _as_a_shell_starts_it)
    return subprocess.Popen([sys.executable, "-m", "hsimap", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` and its digest: what a refused run must leave as it was."""
    import hashlib

    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@dataclass
class Refused:
    """A row of a hostile-input table: what to run (argv built in a scratch folder), the one
    line it must print, and its exit code."""

    name: str
    build: Callable[[Path, Trained], list]
    message: str
    code: int = 1


def refused_in_one_line(argv: list, message: str, code: int, folder: Path) -> None:
    """``hsimap -q ARGV`` exits ``code`` with one ``Error:`` line holding ``message``, and
    leaves ``folder`` as it was, byte for byte (a row of the hostile-input tables)."""
    before = snapshot(folder)
    r = hsimap("-q", *argv)
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    assert message in lines[0], lines[0]
    assert snapshot(folder) == before   # the previous files, byte for byte, and no others


def copy_model(d: Path, trained: Trained, name: str = "model") -> Path:
    """A copy of the session's trained model folder, to damage."""
    import shutil

    m = d / name
    shutil.copytree(trained.model_dir, m)
    return m


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data)")
    return p


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> SynthScene:
    """A 96 x 80 px, 32-band GeoTIFF scene with 4 classes and 4 endmembers."""
    d = tmp_path_factory.mktemp("small")
    return make_scene(d / "scene.tif", SynthSpec(width=96, height=80, bands=32, endmembers=4,
                                                 classes=4, region_size=32, seed=3))


@dataclass
class Trained:
    """A trained model and what it was trained on."""

    made: SynthScene
    model_dir: Path
    result: TrainResult
    model: TrainedModel


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """A small model trained on a 160 x 140 px synthetic scene with a nodata border."""
    from hsimap.io.labels import load_labels
    from hsimap.io.scene import open_scene
    from hsimap.model.store import load_model
    from hsimap.workflows.train import TrainOptions, train

    d = tmp_path_factory.mktemp("trained")
    made = make_scene(d / "scene.tif", SynthSpec(width=160, height=140, bands=24, endmembers=4,
                                                 classes=4, region_size=48, nodata_edges=True,
                                                 seed=11))
    scene = open_scene(made.scene)
    labels, table = load_labels(made.labels, scene)
    result = train(scene, labels, table, d / "model",
                   TrainOptions(steps=30, hidden=32, window=64, halo=8, val_every=5,
                                progress=False, threads=2, seed=0))
    return Trained(made, d / "model", result, load_model(d / "model"))

