"""PNG quicklooks: class map with a legend, abundance montage, endmember spectra, confusion.

Figures are built as bare :class:`matplotlib.figure.Figure` objects, never through pyplot, so
that using hsimap from a notebook does not change its matplotlib backend or open figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from hsimap.classes import ClassTable
from hsimap.io.files import atomic_output


def read_decimated(path: Path, max_side: int = 1000) -> np.ndarray:
    """A raster read at most ``max_side`` px a side (overview-friendly, bounded memory)."""
    with rasterio.open(path) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        shape = (src.count, max(1, src.height // f), max(1, src.width // f))
        return src.read(out_shape=shape, resampling=Resampling.nearest)


def save_figure(fig, path: Path, overwrite: bool = True) -> None:
    """Save a matplotlib figure as a PNG, complete or not at all."""
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")



def classes_png(raster: Path, table: ClassTable, out: Path) -> None:
    classes = read_decimated(raster)[0]
    top = max(table.ids)
    colors = np.zeros((top + 1, 4))
    for i, c in zip(table.ids, table.colors, strict=True):
        colors[i] = (*(np.array(c) / 255.0), 1.0)
    fig = Figure(figsize=(8, 8 * classes.shape[0] / max(classes.shape[1], 1) + 0.5))
    ax = fig.subplots()
    ax.imshow(classes, cmap=ListedColormap(colors), vmin=0, vmax=top, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(color=colors[i], label=n) for i, n in zip(table.ids, table.names,
                                                                strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(raster.stem)
    save_figure(fig, out)


def abundances_png(raster: Path, out: Path) -> None:
    a = read_decimated(raster)
    with rasterio.open(raster) as src:
        names = [d or f"endmember {i + 1}" for i, d in enumerate(src.descriptions)]
    n = a.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < n:
            ax.imshow(a[k], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(names[k], fontsize=9)
    save_figure(fig, out)


def endmembers_png(spectra: np.ndarray, wavelengths: np.ndarray | None, names: list[str],
                   out: Path) -> None:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    x = wavelengths if wavelengths is not None else np.arange(1, spectra.shape[1] + 1)
    for s, n in zip(spectra, names, strict=True):
        ax.plot(x, s, label=n, lw=1.2)
    ax.set_xlabel("wavelength (nm)" if wavelengths is not None else "band")
    ax.set_ylabel("reflectance")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, out)


def confusion_png(confusion: np.ndarray, labels: list[str], title: str, out: Path,
                  overwrite: bool = True) -> None:
    """Confusion matrix (rows truth, columns prediction), shaded by row share, counts in cells."""
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1 + 0.6 * max(len(labels), 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(cm.shape[1]), labels[: cm.shape[1]], rotation=90)
    ax.set_yticks(range(cm.shape[0]), labels[: cm.shape[0]])
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(title)
    save_figure(fig, out, overwrite)
