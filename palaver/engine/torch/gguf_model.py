"""Build a transformers model straight from a GGUF file, keeping its quantised blocks as stored."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from palaver.engine.gguf.file import TensorEntry, kernel_reads, row_weights
from palaver.engine.machine import drop_mapped_pages
from palaver.engine.torch.quantized import GGUFEmbedding, GGUFLinear, join_layers

log = logging.getLogger("palaver.loading")
# Projections that read the same input, which a decode step computes in one kernel call.
JOINABLE_PROJECTIONS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))


@contextmanager
def one_reader(gguf_path: Path) -> Iterator:
    """Parse a GGUF file's metadata once, and hand the same reader to transformers while inside.

    transformers parses the whole file (its 49,152-token vocabulary included, about 3.5 s) for the tokenizer and
    again for the config; it imports gguf.GGUFReader when called, so it finds this one.
    """
    import gguf

    original = gguf.GGUFReader
    reader = original(gguf_path)

    def reuse(path, *args, **kwargs):
        return reader if Path(path) == Path(gguf_path) else original(path, *args, **kwargs)

    setattr(gguf, "GGUFReader", reuse)  # noqa: B010 (a class replaced by a function, which mypy refuses)
    try:
        yield reader
    finally:
        setattr(gguf, "GGUFReader", original)  # noqa: B010


_META_LOCK = threading.Lock()


@contextmanager
def parameters_on_meta_in_this_thread() -> Iterator[None]:
    """Create modules' parameters on the meta device (no memory), in this thread only; buffers stay real.

    accelerate's init_empty_weights does this for every thread at once: a model that another thread built
    meanwhile (a second model loading, a request's reference model) lost its weights to the meta device.
    """
    original = nn.Module.register_parameter
    builder = threading.get_ident()

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and threading.get_ident() == builder:
            registered = module._parameters[name]
            assert registered is not None  # registered just above
            module._parameters[name] = type(registered)(
                registered.to(torch.device("meta")), requires_grad=registered.requires_grad
            )

    with _META_LOCK:  # one patch at a time: two would restore each other's
        nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            nn.Module.register_parameter = original  # type: ignore[method-assign]


def load_gguf_model(gguf_path: Path, config, index: list[TensorEntry]) -> tuple[nn.Module, set[str]]:
    """Fill a model for config from the file, blocks for linear layers and float32 for the rest; name those kept."""
    import gguf
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    started = time.perf_counter()
    with parameters_on_meta_in_this_thread():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    architecture = gguf_architecture(config.model_type)
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())
    names = gguf_to_hf_names(model, architecture, config.num_hidden_layers)
    # Copy-on-write, so torch gets the writable arrays it expects; nothing ever writes to them.
    data = np.memmap(gguf_path, dtype=np.uint8, mode="c")
    embedding_blocks = None
    kept: set[str] = set()
    for entry in index:
        hf_name = names.get(entry.name)
        if hf_name is None:
            continue
        stored = data[entry.offset : entry.offset + int(np.prod(entry.shape)) * np.dtype(entry.dtype).itemsize]
        stored = stored.view(np.dtype(entry.dtype)).reshape(entry.shape)
        module_name, _, attribute = hf_name.rpartition(".")
        module = model.get_submodule(module_name)
        # Float32 weights stay plain tensors; every other type the kernel reads stays as stored.
        keep = entry.qtype != 0 and kernel_reads(entry)
        if keep and attribute == "weight" and isinstance(module, (nn.Linear, nn.Embedding)):
            rows = row_order(processor, entry.name, entry.shape[0])
            if rows is not None:
                # Rows in file order stay a view of the mapped file: no copy, no transient peak while loading,
                # and clean pages the kernel may drop under memory pressure. Reordered rows need a copy.
                in_features = row_weights(entry)
                stored_bytes = stored.view(np.uint8)  # float16 and bfloat16 rows as their bytes, as blocks are
                blocks = torch.from_numpy(stored_bytes[rows] if len(rows) else stored_bytes)
                if isinstance(module, nn.Embedding):
                    replacement: nn.Module = GGUFEmbedding(blocks, entry.qtype, in_features)
                    embedding_blocks = (blocks, entry.qtype, in_features)
                else:
                    replacement = GGUFLinear(blocks, entry.qtype, in_features, _bias_of(module))
                model.set_submodule(module_name, replacement)
                kept.add(entry.name)
                continue
        weights = gguf.dequantize(stored, gguf.GGMLQuantizationType(entry.qtype))
        weights = processor.process(weights=weights, name=entry.name).weights
        _set_tensor(model, hf_name, torch.from_numpy(np.array(weights, dtype=np.float32)))
    if config.tie_word_embeddings and embedding_blocks is not None:
        model.set_submodule("lm_head", GGUFLinear(*embedding_blocks))  # the head reads the embedding's blocks
    _lay_out_joinable_projections(model, data)
    missing = [name for name, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if missing:
        raise ValueError(f"the GGUF file has no weights for {', '.join(missing[:5])}")
    model.eval()
    log.info(
        "read %s: %d tensors kept as GGUF blocks in %.1fs", gguf_path.name, len(kept), time.perf_counter() - started
    )
    return model, kept


def _lay_out_joinable_projections(model: nn.Module, data: np.memmap) -> None:
    """Copy each layer's projections of one input (Q/K/V, gate/up) into one buffer, so a decoder joins them free.

    The file pages they were read from are released, so the process does not hold those weights twice.
    """
    for layer in getattr(getattr(model, "model", None), "layers", []):
        for names in JOINABLE_PROJECTIONS:
            parts = [layer.get_submodule(name) for name in names if _has_submodule(layer, name)]
            if len(parts) != len(names):
                continue
            read = [part.blocks for part in parts if isinstance(part, GGUFLinear)]
            if join_layers(parts) is not None:
                for blocks in read:
                    _release_mapped_pages(blocks, data)


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _release_mapped_pages(tensor: torch.Tensor, data: np.memmap) -> None:
    """Drop the whole pages of the mapped file under tensor from this process; a later read maps them again."""
    start = tensor.data_ptr()
    drop_mapped_pages(data.ctypes.data, data.size, start, start + tensor.numel() * tensor.element_size())


def gguf_architecture(model_type: str) -> str:
    """Return gguf's name for a transformers model type."""
    return {
        "cohere": "command-r",
        "qwen2_moe": "qwen2moe",
        "qwen3_moe": "qwen3moe",
        "gemma3_text": "gemma3",
        "gpt_oss": "gpt-oss",
    }.get(model_type, model_type)


def gguf_to_hf_names(model: nn.Module, architecture: str, layers: int) -> dict[str, str]:
    """Map GGUF tensor names to the model's parameter names, building gguf's name table once."""
    import gguf

    arch = next((key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        raise ValueError(f"gguf does not know the architecture {architecture!r}")
    table = gguf.get_tensor_name_map(arch, layers)
    names = {}
    for hf_name, _ in [*model.named_parameters(), *model.named_buffers()]:
        base, _, suffix = hf_name.rpartition(".")
        gguf_name = table.get_name(base)
        if gguf_name is not None:
            names[f"{gguf_name}.{suffix}"] = hf_name
    return names


def row_order(processor, name: str, rows: int) -> np.ndarray | None:
    """Return how the converter reorders a tensor's rows ([] for not at all), or None if it does more than that."""
    probe = np.arange(rows, dtype=np.float64).reshape(rows, 1)
    processed = processor.process(weights=probe, name=name).weights
    if processed.shape != probe.shape:
        return None
    order = processed[:, 0].astype(np.int64)
    if not np.array_equal(np.sort(order), np.arange(rows)):
        return None
    return np.array([], dtype=np.int64) if np.array_equal(order, np.arange(rows)) else order


def _bias_of(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None or bias.is_meta else bias.detach()


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put a loaded tensor in place of the empty parameter that name points to."""
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, GGUFLinear) and attribute == "bias":
        module.bias = value
        return
    old = getattr(module, attribute)
    value = value.reshape(old.shape)
    if isinstance(old, nn.Parameter):
        setattr(module, attribute, nn.Parameter(value, requires_grad=False))
    else:
        module.register_buffer(attribute, value)
