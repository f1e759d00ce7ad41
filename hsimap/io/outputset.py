"""A set of output files that appears together or not at all.

A run writes its files into a hidden staging folder beside their final place
(``.hsimap-<key>.partial-<random>``) and, once every file is complete, moves them in. Until then
the previous set stays as it was. The move is a handful of renames on one file system; a run
killed in that instant leaves a staging folder marked complete, and the next run on the same
set finishes the move. A staging folder not marked complete is deleted by the next run. Files
of the previous set that the new one does not write (quicklooks skipped this time, an old
``.aux.xml`` with statistics of the old raster) are removed, so a set never mixes two runs.

A running owner holds an advisory lock on its staging folder, so that another run never takes
a live folder for a dead one's leftovers.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from hsimap.errors import HsimapError
from hsimap.io.files import NAME_MAX, short_name

try:  # POSIX; elsewhere every leftover is taken for a dead run's
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

COMPLETE = ".complete"
LOCK = ".lock"


class OutputSet:
    """Files named ``names`` in ``folder``, written through :meth:`path`, shown by
    :meth:`commit`.

    Args:
        folder: where the set lives; created when missing.
        key: what names the set among others in the folder (the scene's stem).
        family: every file name a set of this kind may hold; those the new set does not write
            are removed from the folder when it is committed.
        overwrite: whether the set may replace files of the family; without it, files of the
            family that appeared while the run worked (another run into the same folder) are
            kept and the commit is refused, rather than deleted by this run's.
    """

    def __init__(self, folder: str | Path, key: str, family: Iterable[str] = (),
                 overwrite: bool = True):
        self.folder = Path(folder)
        self.key = key
        self.family = set(family)
        self.overwrite = overwrite
        self._prefix = _prefix(key)
        recover(self.folder, key, self.family)
        self.staging = self.folder / f"{self._prefix}{uuid.uuid4().hex[:8]}"
        self.staging.mkdir()
        self._lock = _hold(self.staging)
        self._done = False

    def path(self, name: str) -> Path:
        """Where to write the file that will be ``folder/name``."""
        return self.staging / name

    def final(self, name: str) -> Path:
        return self.folder / name

    def commit(self) -> list[Path]:
        """Move every staged file to its final name; returns the final paths."""
        if not self.overwrite:
            there = sorted(n for n in self.family if (self.folder / n).exists())
            if there:
                self.abort()
                raise HsimapError(f"{self.folder / there[0]}: appeared while this run worked "
                                  "(another run writing here?); it was kept, and this run's "
                                  "outputs were not written; use --overwrite to replace it")
        (self.staging / COMPLETE).touch()
        try:
            return _move_in(self.staging, self.folder, self.family)
        finally:
            _release(self._lock)
            self._done = True

    def abort(self) -> None:
        """Drop everything staged; the previous set stays as it was."""
        if not self._done:
            _release(self._lock)
            shutil.rmtree(self.staging, ignore_errors=True)
            self._done = True

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.abort()


def recover(folder: Path, key: str, family: Iterable[str] = ()) -> None:
    """Tidy what killed runs left for set ``key`` in ``folder``: finish a move that was marked
    complete, delete staging that was not, and delete hidden ``.partial`` files of the
    family's names (left by single-file writers)."""
    if not folder.is_dir():
        return
    prefix = _prefix(key)
    for d in folder.iterdir():
        if not (d.name.startswith(prefix) and d.is_dir()):
            continue
        lock = _try_hold(d)
        if lock is None:
            raise HsimapError(f"{folder}: another hsimap run is writing the outputs of {key} "
                              f"here ({d.name}); wait for it, or write elsewhere")
        try:
            if (d / COMPLETE).exists():
                _move_in(d, folder, family=())
            else:
                shutil.rmtree(d, ignore_errors=True)
        finally:
            _release(lock)
    names = set(family)
    if names:
        pattern = re.compile(r"^\.(.+)\.partial-[0-9a-f]{8}")
        for f in folder.iterdir():
            m = pattern.match(f.name)
            if m and m.group(1) in names and f.is_file():
                f.unlink(missing_ok=True)


def _prefix(key: str) -> str:
    """The staging folders' names of set ``key`` start so (a long key cut, with its digest:
    the whole name stays within the file system's limit)."""
    return f".hsimap-{short_name(key, NAME_MAX - 8 - 9 - 8)}.partial-"


def _move_in(staging: Path, folder: Path, family: Iterable[str]) -> list[Path]:
    files = sorted(p for p in staging.iterdir() if p.name not in (COMPLETE, LOCK))
    # Data files last, then a model's card: a reader that sees one sees its sidecars already
    # (.hdr, .aux.xml), and a folder with a model.json holds the whole model.
    files.sort(key=lambda p: (p.suffix in (".tif", ".sli", ".json"), p.suffix == ".json"))
    written = {p.name for p in files}
    moved = []
    for p in files:
        target = folder / p.name
        os.replace(p, target)
        moved.append(target)
    for name in set(family) - written:
        (folder / name).unlink(missing_ok=True)
        (folder / (name + ".aux.xml")).unlink(missing_ok=True)
    for name in written:
        # PAM statistics or histograms that GDAL or QGIS cached for the previous file.
        aux = name + ".aux.xml"
        if aux not in written:
            (folder / aux).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    return [m for m in moved if not m.name.endswith(".aux.xml")]


def _hold(d: Path):
    f = open(d / LOCK, "a")  # noqa: SIM115 - held open for the life of the run
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise
    return f


def _try_hold(d: Path):
    try:
        return _hold(d)
    except BlockingIOError:
        return None
    except OSError:
        return open(os.devnull)  # noqa: SIM115 - no lock file to take: nobody owns it


def _release(f) -> None:
    if f is not None:
        f.close()
