"""The embedded USGS spectral library (``usgs_spectra.csv`` beside this file, see
PROVENANCE.md): real mineral and vegetation spectra for naming endmembers and mixing
synthetic scenes, shipped so that nothing is downloaded at run time."""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np


def library_spectra() -> tuple[np.ndarray, list[str], np.ndarray]:
    """The embedded USGS spectra: (n, 224) reflectance, names, wavelengths in nm."""
    with resources.files("hsimap.data").joinpath("usgs_spectra.csv").open() as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    table = np.array([[float(v) for v in r] for r in rows[1:]])
    return table[:, 1:].T.copy(), names, table[:, 0]
