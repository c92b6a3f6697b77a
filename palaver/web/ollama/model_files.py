"""What a served model's files say, as Ollama lists models: format, family, size, parameters, quantization, template."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from palaver.core.reasoning import CLOSE_TAG, OPEN_TAG
from palaver.engine.gguf.file import TYPE_NAMES, GGUFError, GGUFFile, TensorEntry, read_gguf, row_weights
from palaver.engine.machine import WEIGHT_FILES

# llama.cpp's general.file_type, for the types Palaver serves: what a file is "mostly", as its name says.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K"}
FILE_TYPES |= {11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M"}
FILE_TYPES |= {18: "Q6_K", 32: "BF16"}
TORCH_TYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
# Metadata shown as model_info: the file's own scalars and short strings. Arrays (the vocabulary, its merges and
# scores) are left out, as Ollama leaves them out unless asked; the chat template is shown as the template.
MAX_SHOWN_CHARS = 1024
NOT_SHOWN = frozenset({"tokenizer.chat_template"})
STARTED = datetime.now(UTC)  # the time given to models with no file to date them (an upstream's, a hub id's)


@dataclass(frozen=True)
class ModelFacts:
    """What a model's files say about it; empty where there is no file here to read (an upstream, a hub id)."""

    format: str = ""  # gguf or safetensors
    family: str = ""  # the architecture: llama, qwen2…
    parameter_size: str = ""  # 135M, 7.6B
    quantization_level: str = ""  # Q4_K_M, F16…
    size: int = 0  # bytes of the weights' files
    modified_at: datetime = STARTED
    digest: str = ""  # names the files' version (their path, size and time), not a hash of their bytes
    context_length: int | None = None
    template: str = ""  # the chat template, as the file has it
    license: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    thinks: bool | None = None  # its vocabulary holds both think tags as tokens of their own; None: nothing to read


def model_facts(weights: str, name: str) -> ModelFacts:
    """Read what weights (a .gguf file, a model directory, or "" or a hub id: nothing to read) say about a model."""
    path = Path(weights) if weights else None
    try:
        if path is not None and path.is_file():
            stat = path.stat()
            return gguf_facts(str(path), stat.st_size, stat.st_mtime_ns)
        if path is not None and path.is_dir():
            return directory_facts(path)
    except (OSError, ValueError, GGUFError):
        pass  # a file that cannot be read is the load's to report; here it is described as unknown
    return ModelFacts(digest=version_digest(name))


@functools.lru_cache(maxsize=32)
def gguf_facts(path: str, size: int, modified_ns: int) -> ModelFacts:
    """Read a GGUF file's header once per version of the file: its metadata and its tensors' types and sizes."""
    gguf = read_gguf(Path(path))
    architecture = gguf.architecture
    count = sum(weight_count(entry) for entry in gguf.tensors)
    metadata = gguf.metadata
    file_type = metadata.get("general.file_type")
    size_label = metadata.get("general.size_label")
    info = {key: value for key, value in metadata.items() if shown(key, value)}
    info["general.parameter_count"] = count
    context = gguf.get("context_length")
    template = metadata.get("tokenizer.chat_template")
    license_ = metadata.get("general.license")
    named_type = FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else ""
    tokens = metadata.get("tokenizer.ggml.tokens")
    return ModelFacts(
        format="gguf",
        family=architecture,
        parameter_size=size_label if isinstance(size_label, str) and size_label else human_count(count),
        quantization_level=named_type or main_type(gguf),
        size=size,
        modified_at=datetime.fromtimestamp(modified_ns / 1e9, UTC),
        digest=version_digest(f"{path}\0{size}\0{modified_ns}"),
        context_length=context if isinstance(context, int) else None,
        template=template if isinstance(template, str) else "",
        license=license_ if isinstance(license_, str) else "",
        info=info,
        thinks=isinstance(tokens, list) and holds_think_tags(tokens),
    )


def directory_facts(path: Path) -> ModelFacts:
    """Read a model directory's config.json: its architecture and the type its weights are stored in."""
    files = [item for pattern in WEIGHT_FILES for item in path.rglob(pattern)]
    size = sum(item.stat().st_size for item in files)
    modified_ns = max((item.stat().st_mtime_ns for item in files), default=path.stat().st_mtime_ns)
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    context = config.get("max_position_embeddings")
    return ModelFacts(
        format="safetensors" if any(item.suffix == ".safetensors" for item in files) else "pytorch",
        family=str(config.get("model_type", "")),
        quantization_level=TORCH_TYPES.get(dtype, ""),
        size=size,
        modified_at=datetime.fromtimestamp(modified_ns / 1e9, UTC),
        digest=version_digest(f"{path}\0{size}\0{modified_ns}"),
        context_length=context if isinstance(context, int) else None,
        thinks=tokenizer_thinks(path / "tokenizer.json"),
    )


def holds_think_tags(tokens: Any) -> bool:
    """Tell whether a vocabulary holds both think tags as tokens of their own, as a thinking model's does."""
    return OPEN_TAG in tokens and CLOSE_TAG in tokens


def tokenizer_thinks(path: Path) -> bool:
    """Tell whether a tokenizer.json's vocabulary (or its added tokens) holds both think tags; read once a version."""
    if not path.is_file():
        return False
    return tokenizer_file_thinks(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def tokenizer_file_thinks(path: str, modified_ns: int) -> bool:
    """Read a version of a tokenizer.json (its path and time) for both think tags, in its vocabulary or added."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    added = {token.get("content") for token in document.get("added_tokens") or () if isinstance(token, dict)}
    vocab = (document.get("model") or {}).get("vocab") or {}
    # A BPE vocabulary maps each token to its id; a Unigram one lists [token, score] pairs.
    words = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab if isinstance(entry, list)}
    return holds_think_tags(added | words)


def weight_count(entry: TensorEntry) -> int:
    """Return how many weights a tensor holds, stored plain or in blocks."""
    if entry.dtype != "|u1":
        return math.prod(entry.shape)
    return entry.shape[0] * row_weights(entry)


def main_type(gguf: GGUFFile) -> str:
    """Return the type most of a file's matrix weights are stored in, for a file that does not say."""
    weights: Counter[str] = Counter()
    for entry in gguf.tensors:
        if len(entry.shape) == 2:
            weights[TYPE_NAMES[entry.qtype]] += weight_count(entry)
    return weights.most_common(1)[0][0] if weights else ""


def human_count(count: int) -> str:
    """Write a parameter count as Ollama does: 135M, 7.6B."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K"


def shown(key: str, value: Any) -> bool:
    """Tell whether a metadata value is shown as model_info: a scalar or a short string, not the chat template."""
    if key in NOT_SHOWN or isinstance(value, list) or (isinstance(value, float) and not math.isfinite(value)):
        return False  # nor a NaN or an infinity, which JSON cannot carry
    return not isinstance(value, str) or len(value) <= MAX_SHOWN_CHARS


def version_digest(version: str) -> str:
    """Return 64 hex digits that change whenever version does."""
    return hashlib.sha256(version.encode("utf-8", "surrogatepass")).hexdigest()
