"""The process's compute budget: one thread count shared by torch, numba's scan and BLAS, the
memory it may still take, and how the C heap behaves under worker threads.

torch, the fused scan (which sizes its pool from torch's thread count) and OpenBLAS each start
a pool as large as the machine unless told otherwise. Two hsimap runs on one machine, or
torch under dask's workers, then oversubscribe the cores, and a run slows down many times over
instead of twofold. :func:`thread_budget` sets all of them from one number for the length of a
run, and puts back what was there before.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hsimap.errors import HsimapError

# What the network's heavy layers may compute in (hsimap.model.precision decides ``auto``);
# here, without torch, so that commands can check the option before importing it.
PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(name: str) -> None:
    """Refuse a precision that is not one of :data:`PRECISIONS`, in one line."""
    if name not in PRECISIONS:
        raise HsimapError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name}")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextmanager
def thread_budget(threads: int | None) -> Iterator[int]:
    """Within the block, torch's intra-op pool, the scan's pool and BLAS use ``threads``
    threads (None: the available cores). Yields the number in force."""
    import torch
    from threadpoolctl import threadpool_limits

    n = available_cores() if threads is None else max(1, int(threads))
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op pool at ``threads`` within the block, restored after. A window function
    that runs torch comes from a module that imported it; when no module has, nothing in the
    block runs torch, and importing it here would only cost a command its start-up time."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``) for threads started from now on.

    glibc gives each new thread its own heap arena; windows allocated and freed on several
    worker threads fragment them, and a streaming run's RSS crept up with the scene (2048 x 2048
    x 200: peak 2,477 MiB, against 2,145 MiB with two arenas). No-op off glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def keep_freed_blocks(mmap_threshold: int = 32 * 2 ** 20,
                      trim_threshold: int = 256 * 2 ** 20) -> None:
    """Serve window-sized tensors from the heap (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``).

    A window's activations are 1-8 MB each; above glibc's default threshold every one is a
    fresh ``mmap`` whose pages fault in one by one and are unmapped when freed, so a forward
    spent about a tenth of its time in the kernel (sys time 0.98 -> 0.54 s over 40 windows).
    Freed blocks now return to the heap for the next window. 32 MiB is the largest threshold
    glibc accepts. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, mmap_threshold)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_threshold)   # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded within the block (parameter initialisation draws from
    it) and restored after, so that a library call leaves its caller's random state alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def release_memory() -> None:
    """Give memory freed by Python and torch back to the system: glibc keeps freed blocks
    for reuse by the thread arena that freed them, so caches emptied on one thread stay in the
    process's RSS while other threads allocate afresh. No-op off glibc."""
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, or the cgroup limit if lower."""
    from pathlib import Path

    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return avail
