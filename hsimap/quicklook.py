"""PNG quicklooks: class map with a legend, abundance montage, endmember spectra."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from hsimap.io.writers import ClassTable  # noqa: E402
from hsimap.outputs import read_decimated, save_figure  # noqa: E402


def classes_png(raster: Path, table: ClassTable, out: Path) -> None:
    classes = read_decimated(raster)[0]
    top = max(table.ids)
    colors = np.zeros((top + 1, 4))
    for i, c in zip(table.ids, table.colors, strict=True):
        colors[i] = (*(np.array(c) / 255.0), 1.0)
    fig, ax = plt.subplots(figsize=(8, 8 * classes.shape[0] / max(classes.shape[1], 1) + 0.5))
    ax.imshow(classes, cmap=ListedColormap(colors), vmin=0, vmax=top, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(color=colors[i], label=n) for i, n in zip(table.ids, table.names,
                                                                strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(raster.stem)
    save_figure(fig, out)


def abundances_png(raster: Path, out: Path) -> None:
    import rasterio

    a = read_decimated(raster)
    with rasterio.open(raster) as src:
        names = [d or f"endmember {i + 1}" for i, d in enumerate(src.descriptions)]
    n = a.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < n:
            ax.imshow(a[k], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(names[k], fontsize=9)
    save_figure(fig, out)


def endmembers_png(spectra: np.ndarray, wavelengths: np.ndarray | None, names: list[str],
                   out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = wavelengths if wavelengths is not None else np.arange(1, spectra.shape[1] + 1)
    for s, n in zip(spectra, names, strict=True):
        ax.plot(x, s, label=n, lw=1.2)
    ax.set_xlabel("wavelength (nm)" if wavelengths is not None else "band")
    ax.set_ylabel("reflectance")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, out)
