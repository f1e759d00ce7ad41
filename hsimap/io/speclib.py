"""Endmember spectral libraries: ENVI ``.sli``/``.hdr`` (via spectral-python) and CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hsimap.errors import HsimapError
from hsimap.io.envi import to_nm
from hsimap.io.files import atomic_output, check_output, with_extension


def write_library(base: str | Path, spectra: np.ndarray, names: Sequence[str],
                  wavelengths: np.ndarray | None, *, overwrite: bool = False,
                  description: str = "hsimap endmembers") -> list[Path]:
    """Write ``base.sli`` + ``base.hdr`` (ENVI spectral library) and ``base.csv``.

    Args:
        base: output path without suffix.
        spectra: (n_spectra, n_bands) reflectance.
        names: one name per spectrum (``spectra names`` in the header, CSV column names).
        wavelengths: band centres in nanometres, or None (band numbers are used).

    Returns:
        The three paths written.
    """
    from spectral.io.envi import SpectralLibrary

    base = Path(base)
    spectra = np.asarray(spectra, dtype=np.float32)
    n, b = spectra.shape
    if len(names) != n:
        raise HsimapError(f"{n} spectra but {len(names)} names")
    finals = [with_extension(base, ext) for ext in (".sli", ".hdr", ".csv")]
    for f in finals:
        check_output(f, overwrite)
    has_wl = wavelengths is not None and np.all(np.isfinite(wavelengths))
    wl = np.asarray(wavelengths, dtype=float) if has_wl else np.arange(1, b + 1, dtype=float)
    # ENVI lists are comma-separated in braces: names cannot hold those characters.
    header = {"spectra names": [envi_safe_name(x) for x in names],
              "wavelength": [float(w) for w in wl],
              "wavelength units": "Nanometers" if has_wl else "Index",
              "file type": "ENVI Spectral Library"}
    lib = SpectralLibrary(spectra, header, {})
    description = envi_safe_text(description)
    names = header["spectra names"]
    lib.bands.band_unit = header["wavelength units"]
    # The data file is the one atomic_output names, and it moves last: a .sli under its final
    # name means the header and the CSV beside it are complete too.
    with atomic_output(finals[0], overwrite) as tmp_sli:
        tmp = tmp_sli.with_suffix("")
        lib.save(str(tmp), description)
        with open(with_extension(tmp, ".csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["wavelength_nm" if has_wl else "band", *names])
            for k in range(b):
                w.writerow([repr(float(wl[k])), *(f"{spectra[i, k]:.9g}" for i in range(n))])
    return finals


def envi_safe_name(name: object) -> str:
    """A spectrum name an ENVI header list can hold: no commas or braces."""
    return envi_safe_text(name).replace(",", ";")


def envi_safe_text(text: object) -> str:
    """Text an ENVI header value can hold: a brace or a line break would end the value and
    let the rest be read as header keys (a scene named ``x}\nbbl = {0`` injected a bbl)."""
    t = str(text).replace("{", "(").replace("}", ")")
    return " ".join(t.split())


def read_library(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Read spectra from an ENVI ``.sli`` (or its ``.hdr``) or a CSV written like ours.

    CSV: first column wavelengths (nm), one column per spectrum; or one row per spectrum with a
    name column first and wavelengths as the header (the EMIT library layout).

    Returns:
        ``(spectra (n, bands), names, wavelengths_nm or None)``.
    """
    path = Path(path)
    if not path.exists():
        raise HsimapError(f"{path}: no such spectral library")
    try:
        spectra, names, wl = _read_library(path)
    except (IndexError, ValueError, OSError) as exc:
        raise HsimapError(f"{path}: not a readable spectral library ({exc})") from None
    if spectra.ndim != 2 or not spectra.size:
        raise HsimapError(f"{path}: holds no spectra")
    if len(names) != len(spectra):
        raise HsimapError(f"{path}: {len(spectra)} spectra but {len(names)} names")
    bad = [str(n) for n, s in zip(names, spectra, strict=True) if not np.isfinite(s).all()]
    if bad:
        raise HsimapError(f"{path}: spectrum {bad[0]!r} holds NaN or infinite values")
    if wl is not None and (len(wl) != spectra.shape[1] or not np.isfinite(wl).all()):
        raise HsimapError(f"{path}: {len(wl)} wavelengths for {spectra.shape[1]} bands, or "
                          "some not numbers")
    return spectra, names, wl


def _read_library(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    if path.suffix.lower() in (".sli", ".hdr"):
        from spectral.io import envi

        hdr = path.with_suffix(".hdr")
        sli = path.with_suffix(".sli")
        try:
            lib = envi.open(str(hdr), str(sli))
        except Exception as exc:
            raise HsimapError(f"{path}: not a readable ENVI spectral library ({exc})") from None
        wl = np.asarray(lib.bands.centers, dtype=float) if lib.bands.centers else None
        wl = to_nm(wl, lib.bands.band_unit)
        return np.asarray(lib.spectra, dtype=np.float32), list(lib.names), wl
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r]
        if len(rows) < 2:
            raise HsimapError(f"{path}: holds no spectra")
        head, body = rows[0], rows[1:]
        try:
            wl_cols = np.array([float(h) for h in head[1:]])
            names = [r[0] for r in body]
            spectra = np.array([[float(v) for v in r[1:]] for r in body], dtype=np.float32)
            return spectra, names, wl_cols
        except ValueError:
            pass
        try:
            table = np.array([[float(v) for v in r] for r in body])
        except ValueError:
            raise HsimapError(f"{path}: CSV is neither wavelengths x spectra nor "
                              "spectra x wavelengths") from None
        return table[:, 1:].T.astype(np.float32), head[1:], table[:, 0]
    raise HsimapError(f"{path}: spectral library must be .sli, .hdr or .csv")
