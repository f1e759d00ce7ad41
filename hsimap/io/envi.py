"""ENVI conventions that hsimap's readers and writers share: data-file suffixes, header lists
and wavelength units."""

from __future__ import annotations

import numpy as np

# Suffixes an ENVI data file may carry beside its .hdr ("" is no suffix at all); the ones a
# synthetic scene may be written with are those that name an interleave or a plain image.
DATA_SUFFIXES = ("", ".img", ".dat", ".bsq", ".bil", ".bip", ".raw", ".bin", ".envi")
WRITE_SUFFIXES = frozenset({".img", ".dat", ".bsq", ".bil", ".bip", ".raw", ".envi"})


def parse_list(text: str | None) -> list[str] | None:
    """``{a, b, c}`` (an ENVI header list) to ``["a", "b", "c"]``; None when empty."""
    if not text:
        return None
    items = [t.strip() for t in text.strip().strip("{}").split(",")]
    return [t for t in items if t]


def to_nm(values: np.ndarray | None, units: str | None) -> np.ndarray | None:
    """Wavelengths to nanometres. Micrometres are recognised by their unit's name, or, when no
    unit is given, by magnitude (no optical sensor has bands below 100 nm)."""
    if values is None:
        return None
    u = (units or "").strip().lower()
    if u.startswith(("micro", "um", "µm")) or (not u and np.nanmax(values) < 100):
        return values * 1000.0
    return values
