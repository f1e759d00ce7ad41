"""hsimap's version, and the versions a bug report needs (``hsimap --version``).

Lower layers import the version from here, not from the package face, whose import runs its
start-up settings.
"""

from __future__ import annotations

import platform
import sys

__version__ = "0.2.0"


def _version_of(module: str) -> str:
    """A library's version without importing what is not installed; torch is imported only
    here, where the report is asked for."""
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """hsimap, Python and the libraries whose versions change its results."""
    out = {"hsimap": __version__,
           "python": f"{platform.python_version()} ({sys.platform}, {platform.machine()})"}
    for name in ("torch", "numba", "numpy", "rasterio", "dask", "mamba-ssm"):
        out[name] = _version_of(name)
    try:
        import torch

        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
        out["torch"] = f"{torch.__version__} ({build} build)"
    except ImportError:
        pass
    try:
        import rasterio

        out["GDAL"] = rasterio.__gdal_version__
        out["PROJ"] = rasterio.__proj_version__
    except ImportError:
        out["GDAL"] = "not installed"
    return out


def version_report() -> str:
    """One line per component, for ``hsimap --version`` and bug reports."""
    v = versions()
    width = max(map(len, v))
    return "\n".join(f"{k:<{width}}  {val}" for k, val in v.items())
