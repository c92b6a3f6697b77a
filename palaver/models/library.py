"""The local library: a record of each pulled source (its commit and checked files), kept under PALAVER_CACHE_DIR.

The files themselves stay in huggingface_hub's cache; a record says which of them a source is, that their hashes
were checked, and when the model was last used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from filelock import FileLock

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models.choosing import HubFile
from palaver.models.hub import remove_file, snapshot_path

LIBRARY = "library"


@dataclass(frozen=True)
class PulledModel:
    """A pulled source: the name it is served under, the commit it was pulled at, and its files."""

    source: str
    name: str
    repo: str
    commit: str
    files: tuple[HubFile, ...]
    quantisation: str
    pulled_at: float
    last_used: float

    @property
    def paths(self) -> list[Path]:
        return [snapshot_path(self.repo, self.commit, file.path) for file in self.files]

    @property
    def split(self) -> bool:
        return len(self.files) > 1

    def present(self) -> bool:
        """Tell whether every file is still in the cache, whole."""
        return all(p.is_file() and p.stat().st_size == f.size for p, f in zip(self.paths, self.files))

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths if p.is_file())


def library_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / LIBRARY


def record_path(cache_dir: str | Path, source: HubSource) -> Path:
    return library_dir(cache_dir) / f"{hashlib.sha256(str(source).encode()).hexdigest()[:16]}.json"


def file_lock(cache_dir: str | Path, repo: str, path: str) -> FileLock:
    """Return the lock one file's pull holds, across processes: two workers starting at once download it once."""
    name = hashlib.sha256(f"{repo}\0{path}".encode()).hexdigest()[:16]
    folder = library_dir(cache_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{name}.lock")


def read_record(path: Path) -> PulledModel | None:
    try:
        data = json.loads(path.read_text())
        return PulledModel(**{**data, "files": tuple(HubFile(**file) for file in data["files"])})
    except (OSError, ValueError, TypeError, KeyError):  # half-written by hand, or of another version: not pulled
        return None


def find(cache_dir: str | Path, source: HubSource) -> PulledModel | None:
    """Return the record of a pulled source, or None."""
    return read_record(record_path(cache_dir, source))


def all_pulled(cache_dir: str | Path) -> list[PulledModel]:
    """Return every pulled source's record, by name."""
    folder = library_dir(cache_dir)
    found = (read_record(path) for path in sorted(folder.glob("*.json"))) if folder.is_dir() else iter(())
    return sorted((model for model in found if model is not None), key=lambda model: model.name)


def save(cache_dir: str | Path, model: PulledModel) -> None:
    """Write a record whole or not at all; files of the commit it replaces go, unless another record has them."""
    source = HubSource.parse(model.source)
    earlier = find(cache_dir, source)
    write_atomically(record_path(cache_dir, source), json.dumps(asdict(model), indent=1))
    if earlier is not None and earlier.commit != model.commit:
        remove_unused(cache_dir, earlier.paths)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".record-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(staging, path)


def touch(cache_dir: str | Path, model: PulledModel) -> PulledModel:
    """Note that a model is used now (a server or a command started with it)."""
    used = replace(model, last_used=time.time())
    write_atomically(record_path(cache_dir, HubSource.parse(model.source)), json.dumps(asdict(used), indent=1))
    return used


def named(cache_dir: str | Path, name: str) -> PulledModel:
    """Return the pulled model a name or a source means, or raise ConfigurationError naming what there is."""
    pulled = all_pulled(cache_dir)
    canonical = str(HubSource.parse(name)) if name.startswith("hf:") else name
    found = [m for m in pulled if canonical in (m.name, m.source)]
    if len(found) == 1:
        return found[0]
    if found:
        sources = ", ".join(m.source for m in found)
        raise ConfigurationError(f"{len(found)} pulled models are named {name}: name one by its source ({sources})")
    known = ", ".join(m.name for m in pulled) or "none"
    raise ConfigurationError(f"no pulled model is named {name}; pulled: {known}")


def remove(cache_dir: str | Path, model: PulledModel) -> None:
    """Remove a pulled model: its record, and its files unless another record has them."""
    record_path(cache_dir, HubSource.parse(model.source)).unlink(missing_ok=True)
    remove_unused(cache_dir, model.paths)


def remove_unused(cache_dir: str | Path, paths: list[Path]) -> None:
    kept = {path for model in all_pulled(cache_dir) for path in model.paths}
    for path in paths:
        if path not in kept and (path.is_file() or path.is_symlink()):
            remove_file(path)
