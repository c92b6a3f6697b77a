"""Memory this process holds: its resident size, its limit, what a model's weights will take, and giving back."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
from pathlib import Path

from palaver.engine.native_loading import HEADROOM_BYTES, cgroup_limit, resident_bytes

__all__ = ["HEADROOM_BYTES", "cgroup_limit", "give_back", "release_freed_memory", "resident_bytes", "weight_bytes"]

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
HALF_TYPES = ("float16", "bfloat16")


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


def give_back() -> None:
    """Collect what a model left behind, then hand the freed pages back to the system."""
    gc.collect()
    release_freed_memory()
