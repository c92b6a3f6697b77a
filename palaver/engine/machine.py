"""The machine as this process sees it: its cores, its memory and limit, what weights will take, and giving back."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import mmap
import os
from pathlib import Path

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
HALF_TYPES = ("float16", "bfloat16")
HEADROOM_BYTES = 64 * 1024**2  # a step's scratch vectors, the logits, requests' own objects, the allocator's slack
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
# The GGUF block kernels' families (PALAVER_KERNELS), by csrc/blocks.h's numbers, narrowest first; auto: the widest.
KERNEL_FAMILY_NUMBERS = {"auto": 0, "avx2": 1, "avx512": 2}


def weight_bytes(source: str) -> int:
    """Estimate the bytes a model's weights take once loaded, from its files; 0 where there is none to read.

    A GGUF file is served in place (the native step) or mostly as stored: its size. A directory's float16
    or bfloat16 weights are loaded as float32: twice their size.
    """
    path = Path(source)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0  # a hub id: known once loaded
    stored = sum(item.stat().st_size for pattern in WEIGHT_FILES for item in path.rglob(pattern))
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return stored
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return stored * 2 if dtype in HALF_TYPES else stored


def release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them in its arenas otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: what it frees goes back as it decides
        ctypes.CDLL(None).malloc_trim(0)


def drop_mapped_pages(base: int, size: int, start: int, end: int) -> None:
    """Drop the whole pages of [start, end), inside a file mapped at base, from this process; a later read maps them
    again from the page cache, so resident memory stops counting what is no longer read."""
    if not base <= start < end <= base + size:
        return  # not inside the mapping
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)


def give_back() -> None:
    """Collect what a model left behind, then hand the freed pages back to the system."""
    gc.collect()
    release_freed_memory()


def cgroup_limit() -> int:
    """Return the cgroup's memory limit in bytes, or 0 where there is none."""
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # cgroup v1 writes a huge number for "no limit"
            return int(text)
    return 0


def resident_bytes() -> int:
    """Return this process's resident memory."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def kv_budget(limit: int, weight_bytes: int, wanted: int) -> int:
    """Return the KV cache's bytes: what the limit leaves after this process, its weights and headroom."""
    if not limit:
        return wanted
    left = limit - resident_bytes() - weight_bytes - HEADROOM_BYTES
    if left <= 0:
        raise ValueError(
            f"PALAVER_MEMORY_LIMIT ({limit / 1e6:.0f} MB) leaves no room for a KV cache beside the process "
            f"({resident_bytes() / 1e6:.0f} MB) and the weights ({weight_bytes / 1e6:.0f} MB)"
        )
    return min(left, wanted)


def available_cores() -> int:
    """Count the cores this process may really use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def kernel_family_name(number: int) -> str:
    """Return the name of the block kernels' family that csrc/blocks.h numbers so."""
    return next(name for name, value in KERNEL_FAMILY_NUMBERS.items() if value == number)
