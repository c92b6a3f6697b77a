"""Stored turns' files: their format, their temporary names while written, and what a killed writer left."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("palaver.engine")

MAGIC = b"PVKV1\n"
SUFFIX = ".kv"
ABANDONED_SECONDS = 60  # a partial file of a writer that is gone, untouched this long, is deleted


def partial_name(name: str) -> str:
    """Return the name a turn's file is written under before it is renamed: ".<turn>.kv.<pid>.<thread>"."""
    return f".{name}.{os.getpid()}.{threading.get_ident()}"


def writer_pid(name: str) -> int | None:
    """Return the process id in a partial file's name (".<turn>.kv.<pid>.<thread>"); None for any other name."""
    parts = name.split(".")
    if len(parts) != 5 or parts[0] or parts[2] != SUFFIX[1:] or not parts[3].isdigit():
        return None
    return int(parts[3])


def remove_abandoned_partials(root: Path) -> None:
    """Delete the partial files of writers whose process is gone (a worker killed mid-write), in every model's
    directory: they are not turns, so no budget would ever count or remove them. One untouched for a minute, too: a
    writer in another process namespace that shares the directory looks gone, and no write takes that long."""
    stale = time.time() - ABANDONED_SECONDS
    try:
        for directory in root.iterdir():
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                pid = writer_pid(entry.name)
                if pid is None or entry.stat().st_mtime > stale:
                    continue
                try:
                    os.kill(pid, 0)
                except (ProcessLookupError, OverflowError):  # no such process, or a number no process has
                    Path(entry.path).unlink(missing_ok=True)
                except PermissionError:  # alive, another user's
                    pass
    except OSError as exc:  # a directory another process removed, or one not ours: the next store tries again
        log.warning("partial stored turns not cleaned: %s", exc)


def touch(path: Path) -> None:
    """Mark a file used now, by the fine clock: a file's own write time comes from a coarser one."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def read_header(handle) -> dict | None:
    """Read a stored turn's magic and JSON header; None where the file is not one."""
    if handle.read(len(MAGIC)) != MAGIC:
        return None
    size = int.from_bytes(handle.read(4), "little")
    if size > 4096:
        return None
    header = json.loads(handle.read(size))
    return header if isinstance(header, dict) else None
