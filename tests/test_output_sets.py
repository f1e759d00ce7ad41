"""A run's outputs appear together or not at all (issue 13, item 3).

Each interruption below hits a real ``hsimap predict --overwrite`` process that is replacing a
complete previous set; afterwards the folder must hold exactly the previous set, byte for byte,
and no leftovers once the next run has passed.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hsimap.errors import HsimapError
from hsimap.io.outputset import COMPLETE, OutputSet, recover
from tests.conftest import Trained, hsimap, hsimap_process


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def first_set(trained: Trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first") / "out"
    r = hsimap("predict", trained.made.scene, "-m", trained.model_dir, "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def previous(first_set: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A complete set each test may damage: one predict's, copied (the set records no path of
    its own folder, so the copy is what a run there would have written)."""
    out = shutil.copytree(first_set, tmp_path / "out")
    return out, digests(out)


def _predict(t: Trained, out: Path) -> list:
    return ["predict", t.made.scene, "-m", t.model_dir, "-o", out, "--quiet", "--overwrite"]


def _other(t: Trained, out: Path) -> list:
    """A run whose every raster differs from the previous set's (its --mmu is in each file's
    metadata): a mix of the two sets cannot pass for the previous one."""
    return [*_predict(t, out), "--mmu", "3"]


def _limit_file_size():
    # 100 kB: the class map fits, the (4 x 160 x 140 float32) abundance raster does not.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def disk_full(t: Trained, out: Path):
    return hsimap(*_other(t, out), preexec_fn=_limit_file_size)


def _when_staging(t: Trained, out: Path, sig: int):
    p = hsimap_process(*_other(t, out))
    deadline = time.monotonic() + 120
    while not any(d.name.startswith(".hsimap-") for d in out.iterdir()):
        assert p.poll() is None and time.monotonic() < deadline, "never started writing"
        time.sleep(0.02)
    # At once: the whole predict of this small scene now takes well under a second, and a
    # signal sent later found it finished.
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    p.stderr_text = err
    return p


def interrupted(t: Trained, out: Path):
    return _when_staging(t, out, signal.SIGINT)


def killed(t: Trained, out: Path):
    return _when_staging(t, out, signal.SIGKILL)


@dataclass
class Interruption:
    name: str
    act: Callable[[Trained, Path], object]
    message: str | None          # the one line on stderr (None: killed, it says nothing)
    code: int


CASES = [
    Interruption("disk full midway (ulimit -f)", disk_full,
                 "writing the outputs of scene failed", 1),
    Interruption("SIGINT while writing", interrupted,
                 "Interrupted; no partial output was kept.", 130),
    Interruption("kill -9 while writing", killed, None, -9),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_interrupted_run_leaves_the_previous_set(case: Interruption, trained: Trained,
                                                    previous):
    out, before = previous
    r = case.act(trained, out)
    code = r.returncode
    err = getattr(r, "stderr_text", None) or r.stderr or ""
    assert code == case.code, err
    if case.message is not None:
        # libtiff itself prints "_tiffWriteProc: File too large." lines before hsimap's own
        # one line, which must come last and say what was (not) written.
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert case.message in lines[-1] and lines[-1].startswith(("Error:", "Interrupted")), err
        assert all(ln.startswith("_tiff") for ln in lines[:-1]), err
        assert "Traceback" not in err
    assert digests(out) == before
    # The next run tidies whatever the interrupted one left, and completes.
    r = hsimap(*_predict(trained, out))
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert set(digests(out)) == set(before)


def test_a_rerun_without_quicklooks_drops_the_old_ones(trained: Trained, previous):
    out, before = previous
    stale = out / "scene_abundances.tif.aux.xml"   # statistics QGIS cached for the old raster
    stale.write_text("<PAMDataset/>")
    r = hsimap(*_predict(trained, out), "--no-quicklooks")
    assert r.returncode == 0, r.stderr
    names = set(digests(out))
    assert names == {n for n in before if not n.endswith(".png")}
    assert not stale.exists()


def test_a_move_marked_complete_is_finished_by_the_next_run(tmp_path: Path):
    """A run killed between marking its set complete and the last rename: the next run on the
    set rolls it forward, so the folder never keeps half of two sets."""
    (tmp_path / "a.tif").write_text("old a")
    (tmp_path / "a.csv").write_text("old csv")
    s = OutputSet(tmp_path, "a", {"a.tif", "a.csv"})
    s.path("a.tif").write_text("new a")
    s.path("a.csv").write_text("new csv")
    (s.staging / COMPLETE).touch()
    s._lock.close()                 # the owner dies here
    recover(tmp_path, "a")
    assert (tmp_path / "a.tif").read_text() == "new a"
    assert (tmp_path / "a.csv").read_text() == "new csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.tif"]


def test_a_live_run_is_not_taken_for_leftovers(tmp_path: Path):
    first = OutputSet(tmp_path, "a", {"a.tif"})
    first.path("a.tif").write_text("being written")
    with pytest.raises(HsimapError, match="another hsimap run is writing the outputs of a"):
        OutputSet(tmp_path, "a", {"a.tif"})
    first.commit()
    assert (tmp_path / "a.tif").read_text() == "being written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_leftover_partial_files_of_the_set_are_removed(tmp_path: Path):
    (tmp_path / ".a.tif.partial-0123abcd.tif").write_text("x")
    (tmp_path / ".other.tif.partial-0123abcd.tif").write_text("x")
    with OutputSet(tmp_path, "a", {"a.tif"}) as s:
        s.path("a.tif").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tif.partial-0123abcd.tif",
                                                          "a.tif"]
