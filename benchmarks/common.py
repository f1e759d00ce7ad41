"""Shared helpers of the benchmark scripts: data paths, tables, peak memory."""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    """The CPU's model name (lscpu's), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_width() -> str:
    """What the kernels run with: torch's CPU capability and numba's (LLVM's) target CPU."""
    import torch

    try:
        from llvmlite import binding

        target = binding.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - a label only
        target = "?"
    return f"torch {torch.backends.cpu.get_cpu_capability()}, numba {target}"


def machine() -> str:
    import os

    return f"{cpu_name()} ({vector_width()}), {os.cpu_count()} cores, " \
           f"Python {platform.python_version()}"


def mean_std(values: list[float], fmt: str = "{:.3f}") -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} +- {fmt.format(v.std(ddof=1))}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def stamp(command: str) -> str:
    return f"`{command}` on {time.strftime('%Y-%m-%d')}, {machine()}"


def enmap_west(out_dir: str | Path) -> tuple[Path, Path]:
    """The EnMAP Potsdam west tiles mosaicked as their PROVENANCE.md says (``rasterio.merge``,
    nodata -32768 between tiles; labels 0 there), written as GeoTIFFs in ``out_dir`` with the
    tiles' band metadata (wavelength, fwhm, bbl) and band names. Returns (scene, labels)."""
    import rasterio
    from rasterio.merge import merge

    src_dir = SHARED / "enmap_potsdam_west"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, nodata in (("images", -32768.0), ("labels", 0.0)):
        files = sorted((src_dir / kind).glob("*.tif"))
        sources = [rasterio.open(f) for f in files]
        try:
            data, transform = merge(sources, nodata=nodata)
            first = sources[0]
            profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
                       "count": data.shape[0], "dtype": data.dtype, "crs": first.crs,
                       "transform": transform, "nodata": nodata if kind == "images" else None,
                       "tiled": True, "compress": "deflate"}
            dst_path = out / f"enmap_west_{kind}.tif"
            with rasterio.open(dst_path, "w", **profile) as dst:
                dst.write(data)
                for b in range(1, first.count + 1):
                    dst.update_tags(b, **first.tags(b))
                    if first.descriptions[b - 1]:
                        dst.set_band_description(b, first.descriptions[b - 1])
                dst.update_tags(**first.tags())
        finally:
            for s in sources:
                s.close()
        paths.append(dst_path)
    return paths[0], paths[1]
