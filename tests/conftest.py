"""Shared fixtures: real data paths and small synthetic scenes written through GDAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsimap.synth import SynthSpec, make_scene

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data)")
    return p


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A 96 x 80 px, 32-band GeoTIFF scene with 4 classes and 4 endmembers."""
    d = tmp_path_factory.mktemp("small")
    return make_scene(d / "scene.tif", SynthSpec(width=96, height=80, bands=32, endmembers=4,
                                                 classes=4, region_size=32, seed=3))
