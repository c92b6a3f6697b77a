"""Load a Llama-family GGUF file for the native step: config, tokenizer and weights read without torch."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from palaver.core.config import Settings
from palaver.engine.contracts import Batch
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.gguf.checks import read_checked
from palaver.engine.gguf.file import GGUFFile, cached_dir_of, weight_layout
from palaver.engine.gguf.tokenizer import end_of_turn_ids, tokenizer_config, tokenizer_json, unsupported
from palaver.engine.machine import available_cores, cgroup_limit, kv_budget
from palaver.engine.model_sources import fingerprint
from palaver.engine.native import binding
from palaver.engine.native.stored_turns import MOST_PENDING_BYTES, StoredTurns
from palaver.engine.prompting.families import family_for
from palaver.engine.prompting.file_tokenizer import FileTokenizer
from palaver.engine.prompting.model_family import LoadedModel

log = logging.getLogger("palaver.loading")

PAGE_TOKENS = 16  # KV positions per page: small enough that a short row wastes little, large enough to copy fast


def llama_config(gguf: GGUFFile) -> dict[str, Any]:
    """Return a transformers-style config dict from a Llama-family GGUF file's metadata."""
    heads = layer_count(gguf, "attention.head_count", 0)
    hidden = int(gguf.get("embedding_length", 0))
    embedding = next((e for e in gguf.tensors if e.name == "token_embd.weight"), None)
    vocab = len(gguf.metadata.get("tokenizer.ggml.tokens", [])) or (embedding.shape[0] if embedding else 0)
    scaling = gguf.get("rope.scaling.type", "none")
    window = int(gguf.get("attention.sliding_window", 0) or 0)
    context = int(gguf.get("context_length", 2048))
    head_dim = int(gguf.get("attention.key_length", hidden // heads if heads else 0))
    config = {
        "model_type": gguf.architecture,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": layer_count(gguf, "feed_forward_length", 0),
        "num_hidden_layers": int(gguf.get("block_count", 0)),
        "num_attention_heads": heads,
        "num_key_value_heads": layer_count(gguf, "attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rotary_dims": int(gguf.get("rope.dimension_count", head_dim)),  # fewer: each head is rotated in part
        "rms_norm_eps": float(gguf.get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_parameters": {
            "rope_type": "default" if scaling in ("none", None) else scaling,
            "rope_theta": float(gguf.get("rope.freq_base", 10000.0)),
            **({"factor": float(gguf.get("rope.scaling.factor", 1.0))} if scaling == "linear" else {}),
        },
        # A sliding window on every layer (Phi-3's) bounds the context: within it, full attention is the same.
        "max_position_embeddings": min(context, window or 1 << 30),
        "hidden_act": "silu",
        "attention_bias": any(e.name.endswith("attn_q.bias") for e in gguf.tensors),
        "mlp_bias": False,
        "final_logit_softcapping": gguf.get("final_logit_softcapping"),
    }
    if gguf.architecture == "gemma3":
        config.update(gemma3_config(gguf, config, window, context))
    if any(e.name == "rope_factors_long.weight" for e in gguf.tensors):
        config["rope_parameters"].update(longrope_parameters(gguf, context))
    return config


def layer_count(gguf: GGUFFile, key: str, default: int) -> int:
    """Return a count that a file may give once or layer by layer (the same for every layer, once checked)."""
    value = gguf.get(key, default)
    return int(value[0] if isinstance(value, list) else value)


def longrope_parameters(gguf: GGUFFile, context: int) -> dict[str, Any]:
    """Return LongRoPE's parameters (Phi-3 128k, Phi-3.5, Phi-4-mini) as llama.cpp's converter writes them."""
    original = int(gguf.get("rope.scaling.original_context_length", context))
    factor = context / original
    default = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
    return {
        "rope_type": "longrope",
        "original_max_position_embeddings": original,
        "attention_factor": float(gguf.get("rope.scaling.attn_factor", default)),
    }


def gemma3_config(gguf: GGUFFile, config: dict[str, Any], window: int, context: int) -> dict[str, Any]:
    """Return what a Gemma 3 file adds to Llama's config, with the defaults llama.cpp gives what it leaves out."""
    layers, pattern = config["num_hidden_layers"], gguf.get("attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):  # one flag a layer
        sliding = [bool(flag) for flag in pattern]
    else:  # every pattern-th layer is global
        sliding = [int(pattern) == 0 or i % int(pattern) < int(pattern) - 1 for i in range(layers)]
    heads = config["num_attention_heads"]
    # As llama.cpp: queries are scaled by 1 / sqrt(head_dim), except the 27B's (62 layers), by hidden / heads.
    scalar = config["hidden_size"] // heads if layers == 62 else config["head_dim"]
    return {
        "hidden_act": "gelu_pytorch_tanh",
        "max_position_embeddings": context,  # only some layers slide: the others see the whole context
        "sliding_window": window,
        "layer_types": ["sliding_attention" if window and flag else "full_attention" for flag in sliding],
        "rope_local_base_freq": float(gguf.get("rope.freq_base_swa", 10000.0)),
        "query_pre_attn_scalar": scalar,
    }


def refusal(settings: Settings, source: str) -> str | None:
    """Say why the native step will not serve this model, or None when it will."""
    if settings.engine == "transformers":
        return "PALAVER_ENGINE=transformers"
    if settings.weights == "float32":
        return "PALAVER_WEIGHTS=float32 asks for float32 weights"
    if not source.endswith(".gguf"):
        return "the model is not a GGUF file"
    return binding.unavailable_reason()


class NativeServedModel:
    """A GGUF model of a Llama-family architecture (Llama, Qwen, Phi-3, Gemma 3) served by the native step."""

    is_encoder_decoder = False
    embeds_only = False

    def __init__(self, gguf: GGUFFile, config: dict[str, Any], tokenizer: FileTokenizer, settings: Settings):
        self.model_type: str = gguf.architecture
        self.context_length: int = config["max_position_embeddings"]
        self.vocab_size: int = config["vocab_size"]
        self.embedding_size: int = config["hidden_size"]
        eos = tokenizer.eos_token_id
        self.end_of_turn_ids = tuple(end_of_turn_ids(gguf)) or ((eos,) if eos is not None else ())
        self.pad_id: int | None = tokenizer.pad_token_id
        context = min(self.context_length, settings.max_context_tokens)
        threads = settings.torch_threads or available_cores()
        self.weights = binding.NativeModel(
            gguf.path, config, gguf.tensors, threads, context, settings.kernels, settings.arithmetic
        )
        kv_bytes = self.weights.kv_bytes_per_token(settings.kv_type)
        wanted = settings.max_batch_size * context * kv_bytes  # every row at a full context: never more than this
        budget = kv_budget(settings.memory_limit or cgroup_limit(), gguf.path.stat().st_size, wanted)
        pages = budget // (PAGE_TOKENS * kv_bytes)
        if pages * PAGE_TOKENS < context:  # a row of a full context must fit alone, or it would wait forever
            raise ValueError(
                f"PALAVER_MEMORY_LIMIT leaves room for {pages * PAGE_TOKENS} tokens of KV cache, fewer than one "
                f"context of {context}: raise the limit or lower PALAVER_MAX_CONTEXT_TOKENS"
            )
        self.cache = self.weights.new_cache(PAGE_TOKENS, pages, settings.kv_type)
        self.speculate = settings.speculation == "prompt-lookup"
        self.jump_forward = settings.jump_forward
        self.stored: StoredTurns | None = None  # set once the fingerprint that names its files is known
        log.info(
            "native step: %d KV pages of %d positions (%.0f MB, %d tokens, %s)",
            self.cache.max_pages,
            PAGE_TOKENS,
            self.cache.max_pages * self.cache.page_bytes / 1e6,
            self.cache.max_pages * PAGE_TOKENS,
            settings.kv_type,
        )

    def close(self) -> None:
        """Write the finished turns still queued, free the KV pages and the step's model, and unmap the file."""
        if self.stored is not None:
            self.stored.close()
        self.cache.close()
        self.weights.close()

    def new_batch(self, prefix_cache: PrefixCache | None) -> Batch:
        """Start a batch on this model's KV cache; batches share its page budget."""
        from palaver.engine.native.batch import NativeBatch

        return NativeBatch(self.cache, prefix_cache, self.speculate, self.jump_forward, self.stored)

    def kv_bytes(self) -> tuple[int, int]:
        """Return the KV cache's budget and the bytes of it in use."""
        return self.cache.max_pages * self.cache.page_bytes, self.cache.used_pages * self.cache.page_bytes


# Tokenizer kinds that transformers builds from a GGUF file, once, in a child process, cached: SentencePiece
# vocabularies (Llama 2, TinyLlama, Mistral), whose merges are recovered from the tokens' scores.
BUILT_APART = {"llama"}
CONVERT_SECONDS = 600


def tokenizer_refusal(gguf: GGUFFile) -> str | None:
    """Say why the native path cannot have this file's tokenizer, or None when it can."""
    if gguf.metadata.get("tokenizer.ggml.model") in BUILT_APART:
        return None
    return unsupported(gguf)


def file_tokenizer(gguf: GGUFFile, cache_dir: str) -> FileTokenizer:
    """Return the file's tokenizer: built here for byte-level BPE, by transformers in a child process otherwise."""
    if gguf.metadata.get("tokenizer.ggml.model") not in BUILT_APART:
        return FileTokenizer(tokenizer_json(gguf), tokenizer_config(gguf))
    extracted = cached_dir_of(gguf.path, cache_dir, "gguf-metadata")  # as loading.gguf_metadata_dir names it
    if (extracted / "config.json").is_file():  # made by an earlier start: no child, no transformers
        return FileTokenizer((extracted / "tokenizer.json").read_text(), tokenizer_config(gguf))
    # The child extracts what the transformers path caches anyway (tokenizer, config, tensor index); this process
    # reads its tokenizer.json and so never imports transformers or torch.
    code = (
        "import sys; from pathlib import Path; from palaver.engine.torch.loading import gguf_metadata_dir; "
        "print(gguf_metadata_dir(Path(sys.argv[1]), sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(gguf.path), cache_dir],
        capture_output=True,
        text=True,
        timeout=CONVERT_SECONDS,
    )
    if done.returncode != 0:
        raise ValueError(f"transformers could not build {gguf.path.name}'s tokenizer: {done.stderr[-500:]}")
    directory = Path(done.stdout.strip().splitlines()[-1])
    return FileTokenizer((directory / "tokenizer.json").read_text(), tokenizer_config(gguf))


def why_not_native(settings: Settings, source: str) -> tuple[str | None, GGUFFile | None]:
    """Say why the native step will not serve a model (None when it will), with the GGUF file it read to tell.

    A GGUF file's metadata is checked whichever path serves it, before anything is sized from it: a file that
    cannot be right is refused (GGUFError, naming the key), not handed to transformers.
    """
    gguf = read_checked(Path(source)) if source.endswith(".gguf") else None
    why = refusal(settings, source)
    if gguf is not None and why is None:
        why = tokenizer_refusal(gguf) or binding.refusal(llama_config(gguf), gguf.tensors)
    return why, gguf


def load_native(settings: Settings, name: str, source: str) -> LoadedModel | None:
    """Load a GGUF file onto the native step, or return None (having logged why) where it cannot serve it."""
    started = time.perf_counter()
    why, gguf = why_not_native(settings, source)
    if why:
        if settings.engine == "native":
            raise ValueError(f"PALAVER_ENGINE=native cannot serve {name}: {why}")
        log.info("%s runs through transformers: %s", name, why)
        if settings.kv_type != "f16":  # asked for, and not had: say so where the operator looks
            log.warning(
                "PALAVER_KV_TYPE=%s applies to the native step only: %s keeps its cache as it is",
                settings.kv_type,
                name,
            )
        return None
    assert gguf is not None
    config = llama_config(gguf)
    tokenizer = file_tokenizer(gguf, settings.cache_dir)
    model = NativeServedModel(gguf, config, tokenizer, settings)
    family = family_for(model, tokenizer)(model, tokenizer, settings.max_context_tokens)
    seconds = time.perf_counter() - started
    log.info("loaded %s (%s family, native step) in %.1fs", name, family.name, seconds)
    budget, _ = model.kv_bytes()
    # Named, so a client sees which instructions and which arithmetic computed its reply.
    kernels, dots = model.weights.kernels, model.weights.dots
    arithmetic = f"fast-{dots}" if dots else "exact"
    computed = ("gguf-blocks", f"kernels-{kernels}", arithmetic, f"kv-{settings.kv_type}")
    stamp = fingerprint(source, "native", binding.ARITHMETIC_VERSION, *computed)
    layout = weight_layout(gguf.tensors, {e.name for e in gguf.tensors}, gguf.architecture, "native", None)
    layout["kernels"] = kernels
    layout["arithmetic"] = arithmetic
    layout["kv_type"] = settings.kv_type
    if settings.stored_turns_bytes:
        # The export's shape, besides the fingerprint: positions a page, and bytes a position.
        shape = f"{PAGE_TOKENS}x{model.weights.kv_bytes_per_token(settings.kv_type)}"
        # Turns wait in memory for the writer, outside the KV budget: an eighth of a memory limit at most.
        limit = settings.memory_limit or cgroup_limit()
        most_pending = min(MOST_PENDING_BYTES, limit // 8) if limit else MOST_PENDING_BYTES
        root = Path(settings.cache_dir) / "kv"
        model.stored = StoredTurns(root, stamp, shape, settings.stored_turns_bytes, most_pending)
    return LoadedModel(
        name, family, seconds, "gguf-blocks", engine="native", kv_cache_bytes=budget, fingerprint=stamp, gguf=layout
    )
