"""MATLAB ``.mat`` files, v5 (scipy) or v7.3 (HDF5, h5py): the benchmark cubes and labels.

A cube is found from the variables' headers alone (names, shapes, types), so that opening a
scene, and ``hsimap info``, read no pixel values. MATLAB files cannot be read a window at a
time, so the first window asked for reads the chosen variable whole (:class:`MatCube`), once.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hsimap.errors import HsimapError
from hsimap.runtime import available_memory

# whosmat's MATLAB classes that are numeric arrays, as numpy types
_CLASSES = {"double": "float64", "single": "float32", "int8": "int8", "uint8": "uint8",
            "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32",
            "int64": "int64", "uint64": "uint64"}
_ROWS = ("nRow", "lines", "nrow", "rows")
_COLS = ("nCol", "cols", "ncol", "samples")


def load_mat(path: Path) -> dict[str, Any]:
    """All variables of a .mat file, read whole (for small files: labels, ground truth)."""
    hdf5 = _is_hdf5(path)
    if hdf5:
        variables = _variables(path, hdf5)
        _check_declared_sizes(path, {k: math.prod(s) * np.dtype(t).itemsize
                                     for k, (s, t) in variables.items() if t is not None})
    return _read(path, None, hdf5)


def _is_hdf5(path: Path) -> bool:
    try:
        from scipy.io import whosmat

        whosmat(path)
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        return True
    except Exception as exc:  # scipy raises a variety of errors for non-MAT files
        raise HsimapError(f"{path}: not a readable .mat file ({exc})") from None
    return False


def _variables(path: Path, hdf5: bool) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """Each variable's MATLAB shape and numpy type (None: not a numeric array), from the
    headers only."""
    try:
        if not hdf5:
            from scipy.io import whosmat

            return {name: (tuple(shape), _CLASSES.get(cls))
                    for name, shape, cls in whosmat(path) if not name.startswith("__")}
        import h5py

        with h5py.File(path, "r") as f:
            # h5py reverses MATLAB's dimension order
            return {k: (tuple(reversed(d.shape)),
                        d.dtype.name if d.dtype.kind in "iuf" else None)
                    for k, d in f.items() if isinstance(d, h5py.Dataset)}
    except HsimapError:
        raise
    except Exception as exc:
        raise HsimapError(f"{path}: not a readable .mat file ({exc})") from None


def _read(path: Path, names: list[str] | None, hdf5: bool) -> dict[str, Any]:
    """Variables ``names`` (None: all) read whole, in MATLAB's dimension order."""
    try:
        if not hdf5:
            from scipy.io import loadmat

            return {k: v for k, v in loadmat(path, variable_names=names).items()
                    if not k.startswith("__")}
        import h5py

        with h5py.File(path, "r") as f:
            keys = [k for k in (names or f.keys()) if isinstance(f.get(k), h5py.Dataset)]
            return {k: np.asarray(f[k]).T for k in keys}
    except MemoryError:
        raise HsimapError(f"{path}: out of memory reading the .mat file") from None
    except Exception as exc:
        raise HsimapError(f"{path}: not a readable .mat file ({exc})") from None


def _check_declared_sizes(path: Path, sizes: dict[str, int]) -> None:
    """Refuse a file whose arrays declare more than memory can hold: a 2 KB HDF5 file can
    declare a 134 GiB array of fill values, and reading it would take the machine."""
    total, avail = sum(sizes.values()), available_memory()
    if total > avail:
        big = max(sizes, key=sizes.get)
        raise HsimapError(f"{path}: its arrays declare {total / 2**30:,.1f} GiB ({big!r} "
                          f"{sizes[big] / 2**30:,.1f} GiB), more than the "
                          f"{avail / 2**30:,.1f} GiB of memory available; the file is damaged "
                          "or too large to load whole (convert it to GeoTIFF or ENVI)")


class MatCube:
    """The (band, row, col) cube of a .mat file as an array dask can slice: ``shape`` and
    ``dtype`` from the headers, the values read on the first slice and kept."""

    ndim = 3

    def __init__(self, path: Path, variable: str, shape: tuple[int, int, int], dtype: str,
                 layout: tuple[str, int, int] | None, hdf5: bool) -> None:
        self.path, self.variable, self.shape, self._hdf5 = path, variable, shape, hdf5
        self.dtype = np.dtype(dtype)
        self._layout = layout  # None: (rows, cols, bands); else (orientation, rows, cols)
        self._cube: np.ndarray | None = None
        self._lock = threading.Lock()

    def __dask_tokenize__(self) -> tuple:
        stat = self.path.stat()
        return (str(self.path), self.variable, stat.st_size, stat.st_mtime_ns)

    def __getitem__(self, key: Any) -> np.ndarray:
        with self._lock:
            if self._cube is None:
                self._cube = self._load()
        return self._cube[key]

    def _load(self) -> np.ndarray:
        data = _read(self.path, [self.variable], self._hdf5)[self.variable]
        cube = np.asarray(data)
        if self._layout is None:
            # MATLAB benchmark cubes (Indian Pines, Salinas, Pavia, ...) are (rows, cols, bands).
            return np.moveaxis(cube, 2, 0)
        orientation, rows, cols = self._layout
        mat = cube if orientation == "bands-first" else cube.T
        # Zhu's benchmark matrices list pixels in MATLAB column-major order.
        return mat.reshape(mat.shape[0], rows, cols, order="F")


def mat_cube(path: Path, variable: str | None) -> MatCube:
    """The hyperspectral cube of a .mat file, found and shaped from its headers (the named
    ``variable``, else the largest 3-D numeric array, else the largest 2-D matrix), unread."""
    hdf5 = _is_hdf5(path)
    variables = _variables(path, hdf5)
    numeric = {k: s for k, (s, t) in variables.items() if t is not None and len(s) in (2, 3)}
    if variable is not None:
        if variable not in variables:
            raise HsimapError(f"{path}: no variable {variable!r}; it has {sorted(variables)}")
        if variable not in numeric:
            raise HsimapError(f"{path}: {variable!r} is not a 2-D or 3-D numeric array")
        chosen = variable
    else:
        cubes = {k: s for k, s in numeric.items() if len(s) == 3}
        pool = cubes or {k: s for k, s in numeric.items()
                         if min(s) > 1 and math.prod(s) > 1000}
        if not pool:
            raise HsimapError(f"{path}: no hyperspectral cube in this .mat file "
                              f"(variables: {sorted(variables)}); name one with --variable")
        chosen = max(pool, key=lambda k: math.prod(pool[k]))
    shape, dtype = variables[chosen]
    if hdf5:
        _check_declared_sizes(path, {chosen: math.prod(shape) * np.dtype(dtype).itemsize})
    if len(shape) == 3:
        rows, cols, bands = shape
        return MatCube(path, chosen, (bands, rows, cols), dtype, None, hdf5)
    scalars = _read(path, [n for n in (*_ROWS, *_COLS) if n in variables], hdf5)
    rows, cols = _scalar(scalars, _ROWS), _scalar(scalars, _COLS)
    bands_first = shape[0] < shape[1]
    bands, n_pix = shape if bands_first else shape[::-1]
    if rows is None or cols is None:
        side = int(round(math.sqrt(n_pix)))
        if side * side != n_pix:
            raise HsimapError(f"{path}: {chosen!r} is a bands x pixels matrix but the file "
                              "has no nRow/nCol to give the image shape")
        rows = cols = side
    if rows * cols != n_pix:
        raise HsimapError(f"{path}: declares {rows} rows x {cols} columns = {rows * cols:,} "
                          f"px, but {chosen!r} holds {n_pix:,} pixels of {bands} bands")
    orientation = "bands-first" if bands_first else "pixels-first"
    return MatCube(path, chosen, (bands, rows, cols), dtype, (orientation, rows, cols),
                   hdf5)


def _scalar(data: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in data:
            return int(np.asarray(data[n]).ravel()[0])
    return None
