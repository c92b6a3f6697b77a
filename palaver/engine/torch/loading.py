"""Find, convert and load the model that PALAVER_MODEL names."""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PretrainedConfig,
)

from palaver.core.config import Settings
from palaver.core.types import ModelSource
from palaver.engine.gguf.checks import read_checked
from palaver.engine.gguf.file import cached_dir_of, load_tensor_index, read_gguf, save_tensor_index, weight_layout
from palaver.engine.machine import available_cores, release_freed_memory
from palaver.engine.model_sources import fingerprint, plain_source
from palaver.engine.prompting.encoders import ENCODER_TYPES, SentenceLayout, sentence_layout
from palaver.engine.prompting.families import family_for
from palaver.engine.prompting.model_family import LoadedModel
from palaver.engine.torch.gguf_model import load_gguf_model, one_reader
from palaver.engine.torch.quantized import (
    GGUFLinear,
    kernel_available,
    quantise_linear_layers,
    use_kernel_threads,
)
from palaver.engine.torch.served import TorchServedModel

log = logging.getLogger("palaver.loading")


def cached_gguf_dir(gguf_path: Path, cache_dir: str, kind: str, write: Callable[[Path, Path], None]) -> Path:
    """Return cache_dir/kind/<file>-<digest>, made once by write(gguf_path, staging) and moved in atomically."""
    target = cached_dir_of(gguf_path, cache_dir, kind)
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
    with MODEL_BUILDING:
        _convert_gguf(gguf_path, staging)


def _convert_gguf(gguf_path: Path, staging: Path) -> None:
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
    with one_reader(gguf_path):
        AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(staging)
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        save_tensor_index(read_gguf(gguf_path).tensors, staging / "tensors.json")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(staging)


# transformers builds a model under process-wide patches (from_pretrained turns tie_weights off for every thread, and
# restores what it found): two models built at once in two threads can leave tying off for good, and every later
# model without its tied head. One model is built at a time in a process; the native step's loads do not wait.
MODEL_BUILDING = threading.RLock()


def load_model(
    settings: Settings, where: ModelSource | None = None, name: str | None = None, why: str | None = None
) -> LoadedModel:
    """Load the configured model (from where, once backends resolved it), as GGUF blocks where it can.

    why says why the native step does not serve it, for the weight layout that /v1/models shows.
    """
    with MODEL_BUILDING:
        return _load_model(settings, where, name, why)


def _load_model(settings: Settings, where: ModelSource | None, name: str | None, why: str | None) -> LoadedModel:
    started = time.perf_counter()
    where = where or plain_source(settings.model)
    name, source = name or settings.model_name, where.weights
    blocks = settings.weights != "float32" and kernel_available()
    layout, sentence = None, None
    if source.endswith(".gguf"):
        read_checked(Path(source))  # the file's metadata is checked before transformers reads it
        metadata = gguf_metadata_dir(Path(source), settings.cache_dir)
        index = load_tensor_index(metadata / "tensors.json")
        if any(entry.name == "rope_freqs.weight" for entry in index):
            log.warning(
                "%s has Llama 3's rotary scaling (rope_freqs), which transformers' GGUF reading leaves out: its "
                "replies will drift from the model's; the native step reads it (%s)",
                name,
                why,
            )
    if source.endswith(".gguf") and blocks:
        config, tokenizer = AutoConfig.from_pretrained(metadata), AutoTokenizer.from_pretrained(metadata)
        model, kept = load_gguf_model(Path(source), config, index)
        layout = weight_layout(index, kept, config.model_type, "transformers", why)
    else:
        if source.endswith(".gguf"):
            source = str(converted_gguf_dir(Path(source), settings.cache_dir))
        sentence = sentence_layout(Path(source)) if Path(source).is_dir() else None
        source = str(Path(source) / sentence.encoder_path) if sentence else source
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(where.tokenizer if where.tokenizer != where.weights else source)
        if sentence is None and config.model_type in ENCODER_TYPES:  # a hub id's encoder: pooled by its mean
            sentence = SentenceLayout()
        model = model_class_for(config, sentence).from_pretrained(source, dtype=torch.float32)
        if where.weights.endswith(".gguf"):
            layout = weight_layout(index, set(), config.model_type, "transformers, float32", why)
        if settings.weights == "q8_0" and blocks:
            log.info("quantised %d linear layers to Q8_0", quantise_linear_layers(model))
    model.eval()
    in_blocks = any(isinstance(module, GGUFLinear) for module in model.modules())
    kernels = None  # the block kernels' family, where they compute: named in the fingerprint and the layout
    if in_blocks:
        kernels = use_kernel_threads(settings.torch_threads or available_cores(), settings.kernels)
    elif settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    served = TorchServedModel(model, sentence, token_types="token_type_ids" in tokenizer.model_input_names)
    family = family_for(served, tokenizer)(served, tokenizer, settings.max_context_tokens)
    seconds = time.perf_counter() - started
    release_freed_memory()
    weights = "gguf-blocks" if in_blocks else "float32"
    log.info("loaded %s (%s family, %s weights) in %.1fs", name, family.name, weights, seconds)
    arithmetic = [weights, f"kernels-{kernels}"] if kernels else [weights]
    stamp = fingerprint(where.weights, "transformers", f"torch-{torch.__version__}", *arithmetic)
    if layout is not None and kernels:
        layout["kernels"] = kernels
    return LoadedModel(name, family, seconds, weights, fingerprint=stamp, gguf=layout)


def model_class_for(config: PretrainedConfig, sentence: SentenceLayout | None):
    """Return the transformers class to load: a bare encoder, an encoder-decoder, or a causal model."""
    if sentence is not None:
        return AutoModel  # its last hidden states are what a sentence encoder pools
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
