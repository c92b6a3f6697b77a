"""Which of a repository's files a Hub source names: a quantisation's file (as llama.cpp's -hf picks it), or a file.

A model split into parts (`NAME-00001-of-00003.gguf`) is one choice: every part is fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import DEFAULT_REVISION, HubSource

DEFAULT_QUANTISATION = "Q4_K_M"  # what llama.cpp's -hf and Ollama take when a source names none
SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})$")
# A quantisation as llama.cpp's files name it: Q4_K_M, IQ4_XS, Q8_0, F16, BF16..., between separators.
QUANTISATION = re.compile(r"(?:^|[-._/])((?:I?Q\d+(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=[-./]|$)", re.IGNORECASE)
SHOWN_CHOICES = 30  # a listing past this is cut short in a message


@dataclass(frozen=True)
class HubFile:
    """A file in a repository at one commit: its path, its size, and the hash its bytes must have."""

    path: str
    size: int
    sha256: str  # the Hub's LFS metadata; "" for a file kept in git itself, checked by its git hash instead
    git_sha1: str = ""


@dataclass(frozen=True)
class Choice:
    """The files of one model in a repository (several for a split model), and the quantisation they carry."""

    files: tuple[HubFile, ...]
    quantisation: str

    @property
    def label(self) -> str:
        first = self.files[0].path
        return first if len(self.files) == 1 else f"{first} (1 of {len(self.files)} parts)"


def model_key(path: str) -> str:
    """Return what a model's parts share: the path without .gguf and without a split part's number."""
    return SPLIT_PART.sub("", path.removesuffix(".gguf"))


def quantisation_in(path: str) -> str:
    """Return the quantisation a file's path names (its last mention), upper-cased, or ""."""
    found = QUANTISATION.findall(model_key(path))
    return found[-1].upper() if found else ""


def carries(path: str, quantisation: str) -> bool:
    """Tell whether a file's path names quantisation, between separators, in any case."""
    pattern = rf"(?:^|[-._/]){re.escape(quantisation)}(?=[-./]|$)"
    return re.search(pattern, model_key(path), re.IGNORECASE) is not None


def is_projector(path: str) -> bool:
    """Tell whether a file is a vision projector (mmproj), which comes beside a model and is not one."""
    return "mmproj" in PurePosixPath(path).name.lower()


def choices(files: Iterable[HubFile]) -> list[Choice]:
    """Group a repository's GGUF files into models: each file alone, a split model's parts together, in order."""
    grouped: dict[str, list[HubFile]] = {}
    for file in sorted(files, key=lambda f: f.path):
        if file.path.endswith(".gguf") and not is_projector(file.path):
            grouped.setdefault(model_key(file.path), []).append(file)
    return [Choice(tuple(parts), quantisation_in(parts[0].path)) for parts in grouped.values()]


def choose(source: HubSource, files: Iterable[HubFile]) -> Choice:
    """Return the model source names among a repository's files, or raise ConfigurationError listing the choices."""
    found = choices(files)
    if not found:
        raise ConfigurationError(f"{source}: {source.repo} holds no GGUF file at {source.revision}")
    if source.filename:
        named = [c for c in found if source.filename in (f.path for f in c.files)]
        if not named:
            raise ConfigurationError(f"{source}: {source.repo} has no file {source.filename}; {listing(found, source)}")
        return named[0]
    wanted = source.quantisation or DEFAULT_QUANTISATION
    matching = [c for c in found if carries(c.files[0].path, wanted)]
    if not matching and not source.quantisation and len(found) == 1:
        return found[0]  # no quantisation named, and one model to choose: it
    if len(matching) == 1:
        return matching[0]
    if not matching:
        asked = f"no file for the quantisation {wanted}" if source.quantisation else "more than one model"
        raise ConfigurationError(f"{source}: {source.repo} has {asked}; {listing(found, source)}")
    files_listed = ", ".join(c.label for c in matching[:SHOWN_CHOICES])
    raise ConfigurationError(
        f"{source}: {len(matching)} files of {source.repo} carry {wanted} ({files_listed}); name one as "
        f"hf:{source.repo}/FILE.gguf"
    )


def listing(found: list[Choice], source: HubSource) -> str:
    """Say what a repository offers: its quantisations, or its files where the names carry none."""
    tags = sorted({c.quantisation for c in found if c.quantisation})
    repo = source.repo + ("" if source.revision == DEFAULT_REVISION else f"@{source.revision}")
    if tags and all(c.quantisation for c in found):
        return f"it has {', '.join(tags[:SHOWN_CHOICES])} (write hf:{repo}:QUANT)"
    return f"it has {', '.join(c.label for c in found[:SHOWN_CHOICES])} (write hf:{repo}/FILE.gguf)"
