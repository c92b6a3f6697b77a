"""Pulling a Hub source: its files fetched into the Hub's cache and checked, once per file at a time, then recorded.

A pull runs at start-up (the server's, a command's) or from `palaver pull` and the library's page, never on a
request's way to the model: a request only finds a pulled file where the record says it is.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource, is_hub_source
from palaver.models import hub, library
from palaver.models.choosing import HubFile
from palaver.models.library import PulledModel
from palaver.models.progress import Progress

log = logging.getLogger("palaver.models")


def pull(source: HubSource, cache_dir: str | Path, progress: Progress | None = None) -> PulledModel:
    """Fetch what source names at its revision's current commit, checked, and record it; return the record."""
    progress = progress or Progress(str(source))
    progress.set(status="resolving")
    commit = hub.commit_of(source)
    earlier = library.find(cache_dir, source)
    if earlier is not None and earlier.commit == commit and earlier.present():  # pulled already: not listed again
        model = library.touch(cache_dir, earlier)
        progress.set(status="done", name=model.name, parts=len(model.files))
        return model
    choice = hub.choice_at(source, commit)
    for part, file in enumerate(choice.files, 1):
        shown = {"file": file.path, "part": part, "parts": len(choice.files), "sha256": file.sha256 or file.git_sha1}
        progress.set(status="downloading", total=file.size, completed=0, **shown)
        with library.file_lock(cache_dir, source.repo, file.path):
            if not checked_before(cache_dir, source.repo, commit, file):
                path = hub.download(source, commit, file, progress.bar_class())
                progress.set(status="verifying", completed=file.size)
                hub.check(source, path, file)
                mark_checked(cache_dir, file)
        progress.set(completed=file.size)
    now = time.time()
    model = PulledModel(str(source), source.name, source.repo, commit, choice.files, choice.quantisation, now, now)
    library.save(cache_dir, model)
    log.info("pulled %s (%s, %.0f MB) at %s", source, model.name, model.disk_bytes() / 1e6, commit[:12])
    progress.set(status="done", name=model.name)
    return model


def checked_marker(cache_dir: str | Path, file: HubFile) -> Path:
    return library.library_dir(cache_dir) / "checked" / (file.sha256 or file.git_sha1)


def checked_before(cache_dir: str | Path, repo: str, commit: str, file: HubFile) -> bool:
    """Tell whether a file is in the cache at commit, whole, its bytes checked by an earlier pull."""
    path = hub.snapshot_path(repo, commit, file.path)
    return path.is_file() and path.stat().st_size == file.size and checked_marker(cache_dir, file).is_file()


def mark_checked(cache_dir: str | Path, file: HubFile) -> None:
    marker = checked_marker(cache_dir, file)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def ensure(spec: str, cache_dir: str | Path, terminal: bool = False) -> PulledModel:
    """Pull a source at start-up, or where the Hub cannot be asked (offline), find it pulled before; or say how."""
    source = HubSource.parse(spec)
    try:
        return pull(source, cache_dir, Progress(str(source), terminal=terminal))
    except hub.HubUnreachable as exc:
        found = library.find(cache_dir, source)
        if found is None or not found.present():
            raise ConfigurationError(
                f"{exc}; it has not been pulled here: run `palaver pull {source}` where the Hub can be reached "
                "(afterwards HF_HUB_OFFLINE=1 serves it from the cache)"
            ) from None
        if not hub.offline():
            log.warning("%s; serving %s as pulled at %s", exc, source, found.commit[:12])
        return library.touch(cache_dir, found)


def servable_path(model: PulledModel) -> Path:
    """Return the file a pulled model is served from, or raise ConfigurationError where it cannot be served."""
    if model.split:
        raise ConfigurationError(
            f"{model.source} is split into {len(model.files)} files, which Palaver cannot serve yet (its GGUF reader "
            "and the native step map one file): merge the parts with llama.cpp's "
            f"`llama-gguf-split --merge {model.paths[0]} OUT.gguf` and set PALAVER_MODEL to OUT.gguf"
        )
    if not model.present():
        raise ConfigurationError(f"{model.source}: its files left the cache; run `palaver pull {model.source}`")
    return model.paths[0]


def locate(spec: str, cache_dir: str | Path) -> Path:
    """Return the pulled file a Hub source is served from; never asks the Hub (a request may be waiting)."""
    source = HubSource.parse(spec)
    found = library.find(cache_dir, source)
    if found is None:
        raise ConfigurationError(f"{source} has not been pulled: run `palaver pull {source}`")
    return servable_path(found)


def pull_configured(models: list[str], cache_dir: str | Path, terminal: bool = False) -> None:
    """Pull every Hub source among a server's configured models, before its workers start."""
    for spec in models:
        if is_hub_source(spec):
            servable_path(ensure(spec, cache_dir, terminal))
