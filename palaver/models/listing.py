"""What the library holds, as `palaver models ls` and the library's page list it, and the suggested models."""

from __future__ import annotations

from dataclasses import dataclass

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError, ModelRefused
from palaver.models.library import PulledModel, all_pulled
from palaver.models.pulling import servable_path


@dataclass(frozen=True)
class Suggestion:
    """A small chat model that runs well on a CPU, as a Hub source."""

    title: str
    source: str
    parameters: str


# Each a Q4_K_M file of an architecture the native step serves (Llama, Qwen2, Gemma 3, Phi-3), smallest first.
SUGGESTED = (
    Suggestion("SmolLM2 360M Instruct", "hf:bartowski/SmolLM2-360M-Instruct-GGUF:Q4_K_M", "360M"),
    Suggestion("Qwen2.5 0.5B Instruct", "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "0.5B"),
    Suggestion("Gemma 3 1B it", "hf:ggml-org/gemma-3-1b-it-GGUF:Q4_K_M", "1B"),
    Suggestion("Llama 3.2 1B Instruct", "hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "1.2B"),
    Suggestion("Qwen2.5 1.5B Instruct", "hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M", "1.5B"),
    Suggestion("SmolLM2 1.7B Instruct", "hf:bartowski/SmolLM2-1.7B-Instruct-GGUF:Q4_K_M", "1.7B"),
    Suggestion("Phi-3.5 mini instruct", "hf:bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M", "3.8B"),
)


@dataclass(frozen=True)
class LibraryRow:
    """A pulled model as listed: its name and source, its size on disk, what its file is, how it would be served."""

    name: str
    source: str
    disk_bytes: int
    quantisation: str
    architecture: str
    native: str  # "yes", or "no: " and why
    last_used: float
    commit: str


def describe(model: PulledModel, settings: Settings) -> LibraryRow:
    """Read a pulled model's file to say what it is and whether the native step would serve it."""
    from palaver.engine.native.loading import why_not_native

    architecture, native = "-", f"no: split into {len(model.files)} files, which Palaver cannot serve yet"
    if not model.split:
        try:
            why, gguf = why_not_native(settings, str(servable_path(model)))
            architecture = gguf.architecture if gguf is not None else "-"
            native = f"no: {why}" if why else "yes"
        except (ConfigurationError, ModelRefused, OSError) as exc:
            native = f"no: {exc}"
    return LibraryRow(
        model.name,
        model.source,
        model.disk_bytes(),
        model.quantisation or "-",
        architecture,
        native,
        model.last_used,
        model.commit,
    )


def library_rows(settings: Settings) -> list[LibraryRow]:
    """Return each pulled model, described, by name."""
    return [describe(model, settings) for model in all_pulled(settings.cache_dir)]
