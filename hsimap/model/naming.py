"""Endmembers named by what they are: the nearest spectrum of a reference library by spectral
angle, instead of "endmember 3".

The library is the embedded USGS one (:func:`hsimap.data.usgs.library_spectra`) or one the user
gives (ENVI .sli or CSV, :func:`hsimap.io.speclib.read_library`). Library spectra are resampled
(linear interpolation) to the endmembers' wavelengths; bands outside the library's range are
left out of the angle. Spectral angles ignore brightness, so scene units do not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsimap.errors import HsimapError

# Above this angle the nearest spectrum is reported as a hint, not as the endmember's name:
# 0.25 rad (14 degrees) separates spectra that differ in their absorption features.
MATCH_ANGLE = 0.25


def nearest_spectra(spectra: np.ndarray, wavelengths: np.ndarray,
                    library: tuple[np.ndarray, list[str], np.ndarray]
                    ) -> list[tuple[str, float]]:
    """For each row of ``spectra`` (bands at ``wavelengths``, nm), the library spectrum with
    the smallest spectral angle, and that angle in radians."""
    lib, names, lib_wl = library
    wl = np.asarray(wavelengths, dtype=float)
    inside = (wl >= lib_wl.min()) & (wl <= lib_wl.max())
    if inside.sum() < 3:
        raise HsimapError(f"the library covers {lib_wl.min():.0f}-{lib_wl.max():.0f} nm, which "
                          f"leaves fewer than 3 of the endmembers' bands to compare")
    order = np.argsort(lib_wl)
    resampled = np.stack([np.interp(wl[inside], lib_wl[order], s[order]) for s in lib])
    a = np.asarray(spectra, dtype=float)[:, inside]
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    rn = resampled / np.maximum(np.linalg.norm(resampled, axis=1, keepdims=True), 1e-12)
    angles = np.arccos(np.clip(an @ rn.T, -1.0, 1.0))
    best = angles.argmin(axis=1)
    return [(names[j], float(angles[i, j])) for i, j in enumerate(best)]


def endmember_names(spectra: np.ndarray, wavelengths: np.ndarray | None,
                    library_path: str | Path | None = None) -> list[str]:
    """Names for ``spectra``: ``Kaolinite CM9 (0.081 rad)`` for a close match, else
    ``endmember 3 (nearest Kaolinite CM9; 0.412 rad)``; ``endmember k`` without wavelengths.
    Names used twice get `` [2]``, `` [3]``... so that abundance bands stay distinct.

    The one owner of endmember names: the abundance bands, the .sli header, the library CSV
    and the model card all carry these strings unchanged, so every name is one an ENVI header
    list can hold (no commas or braces) and a band joins its spectrum by name."""
    n = len(spectra)
    if wavelengths is None or not np.all(np.isfinite(wavelengths)):
        return [f"endmember {i + 1}" for i in range(n)]
    if library_path is None:
        from hsimap.data.usgs import library_spectra

        library = library_spectra()
    else:
        from hsimap.io.speclib import read_library

        lib, names, wl = read_library(library_path)
        if wl is None:
            raise HsimapError(f"{library_path}: the library has no wavelengths to match by")
        library = (lib, list(names), np.asarray(wl, dtype=float))
    out, seen = [], {}
    from hsimap.io.speclib import envi_safe_name

    for i, (raw, angle) in enumerate(nearest_spectra(spectra, wavelengths, library)):
        # One name in every file: the .sli header cannot hold commas, so no file gets them.
        name = envi_safe_name(raw)
        label = (f"{name} ({angle:.3f} rad)" if angle <= MATCH_ANGLE
                 else f"endmember {i + 1} (nearest {name}; {angle:.3f} rad)")
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} [{seen[label]}]")
    return out
