"""Output files: refusing to overwrite, temporary names beside the target, and cleaning up.

Every writer in hsimap writes under a hidden temporary name from :func:`temp_name` and renames
when complete, so that no complete-looking file exists before its content does.
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hsimap.errors import HsimapError


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless asked to; check the folder is writable."""
    if path.is_dir():
        raise HsimapError(f"{path}: is a folder; name the output file")
    if path.exists() and not overwrite:
        raise HsimapError(f"{path}: exists; use --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HsimapError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK):
        raise HsimapError(f"{parent}: output folder is not writable")


def refuse_inputs(outputs: dict[str, str | Path | None], inputs: list[str | Path | None]
                  ) -> None:
    """Refuse an output that is one of the command's inputs (``--overwrite`` or not): writing
    it would destroy what the command reads, ground truth turned into a picture. ``outputs``
    maps each output's option to its path (None: not asked for)."""
    ins = [Path(p) for p in inputs if p is not None]
    for option, out in outputs.items():
        if out is None:
            continue
        o = Path(out)
        for i in ins:
            same = (os.path.samefile(o, i) if o.exists() and i.exists()
                    else o.resolve() == i.resolve())
            if same:
                raise HsimapError(f"{o}: is one of this command's inputs; name another "
                                  f"{option}")


def output_stem(source: str | Path) -> str:
    """The name a scene's outputs start with: its file name less its extension only.

    ``flight.2023.06.01.tif`` gives ``flight.2023.06.01`` (never ``flight.2023.06``), and a name
    made only of dots cannot lead outside the output folder (``...tif`` gives ``scene``).
    """
    stem = Path(str(source)).stem.replace("/", "_").replace("\\", "_").lstrip(". ")
    return stem or "scene"


def with_extension(base: str | Path, extension: str) -> Path:
    """``base`` + ``extension``: unlike ``Path.with_suffix``, keeps every dot already in the
    name (``flight.2023_endmembers`` + ``.sli``)."""
    base = Path(base)
    return base.with_name(base.name + extension)


def ensure_folder(path: str | Path) -> Path:
    """An output folder that exists and can be written: created when missing."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise HsimapError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HsimapError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise HsimapError(f"{out}: output folder is not writable")
    return out


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """:func:`ensure_folder` for the length of a run: a folder this run created is removed
    again if the run fails before writing anything into it."""
    out = Path(path)
    created = not out.exists()
    ensure_folder(out)
    try:
        yield out
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


NAME_MAX = 255   # bytes in one file name, on every file system hsimap writes to


def short_name(name: str, room: int) -> str:
    """``name`` cut to ``room`` bytes where longer, a digest of the whole name in place of the
    cut, so that two long names stay two names."""
    import hashlib

    raw = name.encode()
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return raw[:room - 9].decode(errors="ignore") + "~" + digest


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no complete output ever has, within the file
    system's limit on a name (a legal 225-character output name must stay writable)."""
    tail = f".partial-{uuid.uuid4().hex[:8]}{path.suffix}"
    # room for the sidecars GDAL and the writers put beside it (.aux.xml, .msk, .ovr)
    return path.with_name(f".{short_name(path.name, NAME_MAX - 1 - len(tail) - 8)}{tail}")


def check_name_length(path: Path) -> None:
    """Refuse an output whose name the file system cannot hold, before any work."""
    n = len(path.name.encode())
    if n > NAME_MAX:
        raise HsimapError(f"{path.name[:40]}...: an output name of {n} bytes, over the file "
                          f"system's {NAME_MAX}; rename the scene (shorter name)")


def remove(*paths: Path) -> None:
    for p in paths:
        for q in (p, Path(str(p) + ".aux.xml")):
            try:
                q.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a single file under a temporary name beside ``path`` (yielded), moved to ``path``
    only when the block ends without an error; on an error nothing is left under either name.
    An existing ``path`` is refused unless ``overwrite``. Sidecars the writer puts beside the
    temporary name (``.shp``'s ``.dbf``, ``.prj``...) move with it."""
    out = Path(path)
    check_output(out, overwrite)
    tmp = temp_name(out)
    try:
        yield tmp
        sides = [(side, out.with_name(out.stem + side.name[len(tmp.stem):]))
                 for side in tmp.parent.glob(f"{glob.escape(tmp.stem)}.*") if side != tmp]
        if not overwrite:   # checked again: another run may have written it meanwhile
            for target in [out, *(t for _, t in sides)]:
                if target.exists():
                    raise HsimapError(f"{target}: appeared while this command ran (another "
                                      "run?); it was kept, and this result not written; use "
                                      "--overwrite to replace it")
        for side, target in sides:
            os.replace(side, target)
        if overwrite:
            os.replace(tmp, out)
        else:
            try:   # a link never replaces: the data file appears only where none is
                os.link(tmp, out)
            except FileExistsError:
                raise HsimapError(f"{out}: appeared while this command ran (another run?); "
                                  "it was kept, and this result not written") from None
            except OSError:   # a file system without hard links
                os.replace(tmp, out)
    finally:
        for side in tmp.parent.glob(f"{glob.escape(tmp.stem)}.*"):
            side.unlink(missing_ok=True)
