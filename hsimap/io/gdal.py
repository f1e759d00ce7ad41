"""Talking to GDAL: its messages kept from stderr, creation options checked before a run, and
the block cache bounded for streaming."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

from hsimap.errors import HsimapError


def parse_creation_options(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings (from ``--co``) to a dict GDAL takes."""
    out = {}
    for item in items:
        if "=" not in item:
            raise HsimapError(f"creation option {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip().upper()] = v.strip()
    return out


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        # rasterio prefixes GDAL's error class ("CPLE_IllegalArg in ..."): users need the rest.
        head, sep, rest = msg.partition(" in ")
        self.messages.append(rest if sep and head.startswith("CPLE_") else msg)


@contextmanager
def gdal_messages() -> Iterator[list[str]]:
    """GDAL's warnings and errors during the block, as text, kept from stderr.

    rasterio hands GDAL's messages to the ``rasterio`` logger; unhandled, Python prints each
    as a bare line (``_tiffWriteProc: File too large.``) that names neither file nor run.
    """
    handler = _Collect()
    logger = logging.getLogger("rasterio")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    # `hsimap -q` raises the logger's level to hide GDAL's chatter; what hsimap acts on
    # (a damaged tag, a failed write) must still arrive here.
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        # GDAL hands messages to rasterio's logger only inside an Env; outside one it prints
        # them to stderr itself ("ERROR 1: ..."), on any thread that closes a dataset.
        with rasterio.Env():
            yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


INTEGER_OPTIONS = {"BLOCKSIZE", "BLOCKXSIZE", "BLOCKYSIZE", "ZLEVEL", "ZSTD_LEVEL", "LEVEL",
                   "JPEG_QUALITY", "QUALITY", "WEBP_LEVEL", "JXL_EFFORT", "OVERVIEW_COUNT",
                   "PREDICTOR"}


def check_creation_options(options: dict[str, str], driver: str = "GTiff") -> None:
    """Refuse creation options ``driver`` does not know or whose value it does not take.

    GDAL only warns about them and writes with its defaults: ``--co COMPRESS=NOPE`` wrote an
    uncompressed file without a word.
    """
    if not options:
        return
    for k, v in options.items():
        # GDAL's COG driver aborts the process (std::bad_alloc) on BLOCKSIZE=abc: numbers are
        # checked here before GDAL sees them.
        if k in INTEGER_OPTIONS and not v.lstrip("-").isdigit():
            raise HsimapError(f"--co {k}={v}: {k} takes an integer")
    from rasterio.io import MemoryFile

    with gdal_messages() as messages, MemoryFile() as mem:
        with mem.open(driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                      crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 8)) as src:
            src.write(np.zeros((1, 8, 8), np.uint8))
        rasterio.shutil.copy(mem.name, "/vsimem/hsimap-co-check.tif", driver=driver, **options)
        rasterio.shutil.delete("/vsimem/hsimap-co-check.tif")
    if messages:
        raise HsimapError(f"--co {' '.join(f'{k}={v}' for k, v in options.items())}: "
                          f"{messages[0].rstrip('.')}")


# GDAL's one block cache (5% of RAM by default) holds written blocks until it is full and
# decoded blocks of the scene being read, so a streaming run's memory grows with the scene up
# to that size. Capped, memory stops growing once a scene exceeds the cap. The cap is sized for
# reading: overlapping windows reuse decoded blocks (reading every window of a 512 x 512 x 200
# GeoTIFF took 2.8 s with a 128 MiB cache, 1.1 s with 512 MiB, 0.6 s with 1.2 GiB).
STREAM_CACHE_BYTES = 512 * 2**20


# Reading chips scattered over a scene reuses no decoded block but those of the chip itself:
# a 64 px window of a pixel-interleaved, 256 px tiled 200-band int16 GeoTIFF touches at most
# 4 tiles of 26 MB, decoded whole.
SCATTERED_CACHE_BYTES = 128 * 2**20


def bounded_write_cache(nbytes: int = STREAM_CACHE_BYTES) -> rasterio.Env:
    """A GDAL environment whose block cache holds at most ``nbytes`` (rasterio sets it live,
    and restores the previous size on leaving)."""
    return rasterio.Env(GDAL_CACHEMAX=nbytes)

