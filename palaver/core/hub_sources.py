"""A GGUF file on the Hugging Face Hub as a model source: hf:OWNER/REPO[@REV][:QUANT] or hf:OWNER/REPO[@REV]/FILE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from palaver.core.errors import ConfigurationError

PREFIX = "hf:"
DEFAULT_REVISION = "main"
NAME_PART = r"[A-Za-z0-9_.-]+"
SOURCE = re.compile(
    rf"hf:(?P<repo>{NAME_PART}/{NAME_PART})(?:@(?P<revision>{NAME_PART}))?"
    rf"(?::(?P<quantisation>[A-Za-z0-9_.+-]+)|/(?P<filename>[^@:]+\.gguf))?"
)
WRITTEN = "hf:OWNER/REPO:QUANT or hf:OWNER/REPO/FILE.gguf, with @REVISION after REPO to pin one"
# Ollama's names for the same files (`ollama pull hf.co/OWNER/REPO:QUANT`), read as hf: sources where Ollama's API is.
OLLAMA_HOSTS = ("hf.co/", "huggingface.co/")


@dataclass(frozen=True)
class HubSource:
    """A GGUF model on the Hub: its repository, a revision, and a quantisation or a file that picks the file."""

    repo: str
    revision: str = DEFAULT_REVISION
    quantisation: str = ""
    filename: str = ""

    @classmethod
    def parse(cls, spec: str) -> HubSource:
        """Read a hf: source, or raise ConfigurationError saying how one is written."""
        found = SOURCE.fullmatch(spec.strip())
        filename = found["filename"] if found else None
        if not found or (filename and ".." in PurePosixPath(filename).parts):
            shown = spec if len(spec) <= 200 else spec[:200] + "…"
            raise ConfigurationError(f"{shown!r} is not a Hub source: write {WRITTEN}")
        return cls(found["repo"], found["revision"] or DEFAULT_REVISION, found["quantisation"] or "", filename or "")

    def __str__(self) -> str:
        revision = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        chosen = f"/{self.filename}" if self.filename else f":{self.quantisation}" if self.quantisation else ""
        return f"{PREFIX}{self.repo}{revision}{chosen}"

    @property
    def name(self) -> str:
        """Return the name clients use for it: a file's stem, as for a local file, else REPO:QUANT."""
        if self.filename:
            return PurePosixPath(self.filename).stem
        return f"{self.repo}:{self.quantisation}" if self.quantisation else self.repo


def is_hub_source(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


def from_ollama_name(name: str) -> str:
    """Return the hf: source an Ollama model name means (hf.co/OWNER/REPO:QUANT), or the name as it is."""
    for host in OLLAMA_HOSTS:
        if name.startswith(host):
            return PREFIX + name[len(host) :].removesuffix(":latest")  # Ollama's tag for "the default"
    return name
