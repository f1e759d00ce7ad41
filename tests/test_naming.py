"""Endmembers named by the nearest library spectrum, with the angle (issue 14)."""

from __future__ import annotations

import csv

import numpy as np
import rasterio

from hsimap.data.usgs import library_spectra
from hsimap.io.scene import open_scene
from hsimap.model.naming import MATCH_ANGLE, endmember_names, nearest_spectra
from hsimap.workflows.unmix import unmix


def _resampled(names: list[str], wl: np.ndarray) -> np.ndarray:
    lib, all_names, lib_wl = library_spectra()
    return np.stack([np.interp(wl, lib_wl, lib[all_names.index(n)]) for n in names])


def test_library_spectra_at_another_sensors_bands_find_themselves():
    """USGS spectra resampled to 120 bands and darkened (units and brightness do not matter
    to an angle) are named after themselves, at an angle near 0."""
    _, all_names, _ = library_spectra()
    pick = [all_names[i] for i in (0, 5, 11, 17)]
    wl = np.linspace(420, 2400, 120)
    found = nearest_spectra(0.6 * _resampled(pick, wl) * 10_000, wl, library_spectra())
    assert [n for n, _ in found] == pick
    assert max(a for _, a in found) < 0.01
    names = endmember_names(0.6 * _resampled(pick, wl), wl)
    assert names == [f"{n} ({a:.3f} rad)" for n, a in found]


def test_a_poor_match_is_a_hint_not_a_name(tmp_path):
    wl = np.linspace(420, 2400, 60)
    flat_ramp = np.linspace(1.0, 0.0, 60)[None] ** 8     # like nothing in the library
    (name,) = endmember_names(flat_ramp, wl)
    assert name.startswith("endmember 1 (nearest ")
    assert float(name.rsplit("; ", 1)[1].split(" rad")[0]) > MATCH_ANGLE
    assert "," not in name   # an ENVI header list cannot hold it
    assert endmember_names(flat_ramp, None) == ["endmember 1"]


def test_a_user_library_names_the_endmembers(tmp_path):
    wl = np.linspace(400, 1000, 50)
    with open(tmp_path / "lib.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wavelength_nm", "red roof", "green lawn"])
        for k, x in enumerate(wl):
            w.writerow([x, 0.1 + 0.5 * (x > 600), 0.05 + 0.4 * (x > 700) + 0.1 * (k == 10)])
    spectra = np.stack([0.1 + 0.5 * (wl > 600), 0.05 + 0.4 * (wl > 700)])
    names = endmember_names(spectra, wl, tmp_path / "lib.csv")
    assert [n.split(" (")[0] for n in names] == ["red roof", "green lawn"]


def test_unmix_writes_the_names_in_every_product(small_scene, tmp_path):
    r = unmix(open_scene(small_scene.scene), tmp_path, endmembers=4, method="vca-fcls",
              progress=False, quicklooks=False)
    assert all(" rad)" in n for n in r.names)
    with rasterio.open(r.paths["abundances"]) as src:
        assert list(src.descriptions) == r.names
    header = r.paths["library_hdr"].read_text()
    assert all(n.replace(",", ";") in header for n in r.names)
    with open(r.paths["library_csv"], newline="") as f:
        assert next(csv.reader(f))[1:] == [n.replace(",", ";") for n in r.names]



