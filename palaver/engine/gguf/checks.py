"""Check a GGUF file's hyperparameters against its tensors and sane bounds, before anything is sized from them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from palaver.engine.gguf.file import GGUFError, GGUFFile, TensorEntry, read_gguf, row_weights

# The largest value of each count: past every real model's (today's largest: 126 layers, 16,384 wide, 128 heads of
# 256, a 262,144-token vocabulary, 10M positions, 512 experts), yet small enough that nothing sized from one alone
# can exhaust memory. What is sized from two or more is checked against the tensor it describes instead.
BOUNDS = {
    "block_count": 4096,
    "embedding_length": 1 << 17,
    "feed_forward_length": 1 << 20,
    "expert_feed_forward_length": 1 << 20,
    "attention.head_count": 4096,
    "attention.head_count_kv": 4096,
    "attention.key_length": 4096,
    "attention.value_length": 4096,
    "rope.dimension_count": 1 << 32,  # at most the head size, below
    "context_length": 1 << 24,
    "rope.scaling.original_context_length": 1 << 24,
    "attention.sliding_window": 1 << 24,
    "vocab_size": 1 << 22,
    "expert_count": 4096,
    "expert_used_count": 4096,
}
MAY_BE_ZERO = {"attention.sliding_window", "expert_count", "expert_used_count", "expert_feed_forward_length"}
# Counts llama.cpp lets a file give layer by layer, as block_count values (0 for a layer without one).
PER_LAYER = {"feed_forward_length", "attention.head_count", "attention.head_count_kv"}
# Floats that must be finite, and positive (or, for epsilon, not negative).
FLOATS = {
    "rope.freq_base": 0.0,
    "rope.freq_base_swa": 0.0,
    "rope.scaling.factor": 0.0,
    "rope.scaling.attn_factor": 0.0,
    "attention.layer_norm_rms_epsilon": None,
}
# The architectures whose tensors are laid out as Llama's (those the native step serves).
LLAMA_LAYOUTS = {"llama", "qwen2", "qwen3", "phi3", "gemma3"}
# Keys that must hold one kind of value, else the tokenizer or the template would trip over another.
STRINGS = ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template")
FLAGS = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix")
TOKENIZER_ARRAYS = {"tokenizer.ggml.scores": (int, float), "tokenizer.ggml.token_type": (int,)}


def read_checked(path: Path) -> GGUFFile:
    """Read a GGUF file's header and refuse it, naming the key and its value, where its metadata cannot be right."""
    gguf = read_gguf(path)
    check_metadata(gguf)
    return gguf


def check_metadata(gguf: GGUFFile) -> None:
    """Refuse a file whose counts are out of bounds, disagree with each other, or with the tensors they describe."""
    _check_kinds(gguf)
    counts = {key: _count(gguf, key, bound) for key, bound in BOUNDS.items()}
    for key, least in FLOATS.items():
        _float(gguf, key, least)
    layers = counts["block_count"]
    for key in PER_LAYER & counts.keys():
        _per_layer(gguf, key, counts[key], layers)
    _check_layers(gguf, layers)
    vocab = _check_vocabulary(gguf, counts["vocab_size"])
    heads, kv_heads = _uniform(counts["attention.head_count"]), _uniform(counts["attention.head_count_kv"])
    hidden = counts["embedding_length"]
    if heads and kv_heads and heads % kv_heads:
        raise GGUFError(f"{_name(gguf, 'attention.head_count_kv')} = {kv_heads} must divide the head count {heads}")
    if heads and hidden and heads > hidden:
        raise GGUFError(f"{_name(gguf, 'attention.head_count')} = {heads} must be at most the width {hidden}")
    head = counts["attention.key_length"]
    if head is None and heads and hidden:
        if hidden % heads:
            raise GGUFError(f"{_name(gguf, 'embedding_length')} = {hidden} does not split into {heads} heads")
        head = hidden // heads
    rotary = counts["rope.dimension_count"]
    most = f"the head size {head}" if head else BOUNDS["attention.key_length"]
    if rotary is not None and (rotary % 2 or rotary > (head or BOUNDS["attention.key_length"])):
        raise GGUFError(f"{_name(gguf, 'rope.dimension_count')} = {rotary} must be even and at most {most}")
    used, experts = counts["expert_used_count"], counts["expert_count"]
    if used and used > (experts or 0):
        raise GGUFError(f"{_name(gguf, 'expert_used_count')} = {used} must be at most the expert count {experts or 0}")
    original = counts["rope.scaling.original_context_length"]
    if original is not None and original < 2:
        raise GGUFError(f"{_name(gguf, 'rope.scaling.original_context_length')} = {original} must be at least 2")
    pattern = gguf.get("attention.sliding_window_pattern")
    if (
        pattern is not None
        and not (_whole(pattern) and 0 <= pattern <= BOUNDS["block_count"])
        and (not isinstance(pattern, list) or len(pattern) != layers)  # one flag a layer, read for each layer
    ):
        name = _name(gguf, "attention.sliding_window_pattern")
        raise GGUFError(f"{name} = {_show(pattern)} must be a count, or one flag for each of {layers} layers")
    _check_tensors(gguf, vocab, hidden, counts, head)


def _check_tensors(gguf: GGUFFile, vocab: int | None, hidden: int | None, counts: dict, head: int | None) -> None:
    """Check the tensors that the counts size: each one's shape must be the one the counts give it."""
    tensors = {entry.name: entry for entry in gguf.tensors}
    width = (_name(gguf, "embedding_length"), hidden)
    tokens = "the length of tokenizer.ggml.tokens" if "tokenizer.ggml.tokens" in gguf.metadata else None
    for name in ("token_embd.weight", "output.weight"):
        _expect(gguf, tensors.get(name), (tokens or _name(gguf, "vocab_size"), vocab), width)
    _expect(gguf, tensors.get("position_embd.weight"), (_name(gguf, "context_length"), counts["context_length"]), width)
    if gguf.architecture not in LLAMA_LAYOUTS:
        return
    heads, kv_heads = _uniform(counts["attention.head_count"]), _uniform(counts["attention.head_count_kv"])
    kv_heads, ffn = kv_heads or heads, _uniform(counts["feed_forward_length"])
    value = counts["attention.value_length"] or head
    q = (f"{_name(gguf, 'attention.head_count')} x head size", heads * head if heads and head else None)
    k = (f"{_name(gguf, 'attention.head_count_kv')} x head size", kv_heads * head if kv_heads and head else None)
    v = (f"{_name(gguf, 'attention.head_count_kv')} x value size", kv_heads * value if kv_heads and value else None)
    o = (f"{_name(gguf, 'attention.head_count')} x value size", heads * value if heads and value else None)
    f = (_name(gguf, "feed_forward_length"), ffn)
    qkv = ("heads and KV heads x head size", (heads + 2 * kv_heads) * head if heads and kv_heads and head else None)
    shapes = {
        "attn_q.weight": (q, width),
        "attn_k.weight": (k, width),
        "attn_v.weight": (v, width),
        "attn_output.weight": (width, o),
        "attn_qkv.weight": (qkv, width),
        "ffn_gate.weight": (f, width),
        "ffn_down.weight": (width, f),
        "attn_q.bias": (q,),
        "attn_k.bias": (k,),
        "attn_v.bias": (v,),
        "attn_q_norm.weight": ((_name(gguf, "attention.key_length"), head),),
        "attn_k_norm.weight": ((_name(gguf, "attention.key_length"), head),),
    }
    for part in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"):
        shapes[f"{part}.weight"] = (width,)
    rotary = counts["rope.dimension_count"] or head
    half = (f"{_name(gguf, 'rope.dimension_count')} / 2", rotary // 2 if rotary else None)
    _expect(gguf, tensors.get("output_norm.weight"), width)
    for name in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"):
        _expect(gguf, tensors.get(name), half)
    for entry in gguf.tensors:
        part = entry.name.split(".", 2)[-1] if entry.name.startswith("blk.") else ""
        if part in shapes:
            _expect(gguf, entry, *shapes[part])
        elif part == "ffn_up.weight":  # Phi-3 joins the gate and up rows in one
            rows = 2 * ffn if gguf.architecture == "phi3" and ffn and entry.shape[0] == 2 * ffn else ffn
            _expect(gguf, entry, (f[0], rows), width)


def _expect(gguf: GGUFFile, entry: TensorEntry | None, *dims: tuple[str, int | None]) -> None:
    """Refuse a tensor whose shape (rows, then weights a row) is not the one the named counts give it."""
    if entry is None:
        return
    shape = _shape(entry)
    wanted = (dims[0][1],) if len(dims) == 1 else (dims[0][1], dims[1][1])
    if len(shape) != len(wanted) and len(dims) == 1 and len(shape) == 2 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != len(wanted) or any(w is not None and s != w for s, w in zip(shape, wanted)):
        given = ", ".join(f"{key} = {value}" for key, value in dims if value is not None)
        made = " x ".join("?" if w is None else str(w) for w in wanted)
        raise GGUFError(f"tensor {entry.name!r} is {' x '.join(map(str, shape))}, but {given} make it {made}")


def _shape(entry: TensorEntry) -> tuple[int, ...]:
    if len(entry.shape) == 1:
        return entry.shape
    if entry.dtype == "|u1":
        return entry.shape[0], row_weights(entry)
    return math.prod(entry.shape[:-1]), entry.shape[-1]


def _check_layers(gguf: GGUFFile, layers: int | None) -> None:
    """Refuse layer tensors outside block_count, and (for Llama's layout) a block_count the tensors do not fill."""
    seen = set()
    for entry in gguf.tensors:
        if entry.name.startswith("blk."):
            number = entry.name.split(".")[1]
            if not number.isdigit() or entry.name.count(".") < 2:
                raise GGUFError(f"tensor {entry.name!r} does not name its layer as blk.<number>.<part>")
            seen.add(int(number))
    if seen and (layers is None or max(seen) >= layers):
        raise GGUFError(f"{_name(gguf, 'block_count')} = {layers} but the file holds layer {max(seen)}'s tensors")
    if gguf.architecture in LLAMA_LAYOUTS and layers is not None and len(seen) != layers:
        raise GGUFError(f"{_name(gguf, 'block_count')} = {layers} but the file holds the tensors of {len(seen)} layers")


def _check_vocabulary(gguf: GGUFFile, vocab_size: int | None) -> int | None:
    """Return the vocabulary's size: the token list's length, which vocab_size and the other arrays must match."""
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    if tokens is None:
        return vocab_size
    if not isinstance(tokens, list) or not tokens or not all(isinstance(token, str) for token in tokens):
        raise GGUFError(f"tokenizer.ggml.tokens = {_show(tokens)} must be a list of strings")
    if len(tokens) > BOUNDS["vocab_size"]:
        raise GGUFError(f"tokenizer.ggml.tokens holds {len(tokens)} tokens, more than the {BOUNDS['vocab_size']} read")
    if vocab_size is not None and vocab_size != len(tokens):
        raise GGUFError(f"{_name(gguf, 'vocab_size')} = {vocab_size} but tokenizer.ggml.tokens holds {len(tokens)}")
    for key, kinds in TOKENIZER_ARRAYS.items():
        values = gguf.metadata.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(tokens) or not all(_whole(v, kinds) for v in values):
            raise GGUFError(f"{key} = {_show(values)} must hold one number a token ({len(tokens)})")
    merges = gguf.metadata.get("tokenizer.ggml.merges")
    if merges is not None and (not isinstance(merges, list) or not all(isinstance(m, str) for m in merges)):
        raise GGUFError(f"tokenizer.ggml.merges = {_show(merges)} must be a list of strings")
    return len(tokens)


def _check_kinds(gguf: GGUFFile) -> None:
    """Refuse a string, flag or token id stored as another kind of value (an id out of range is left to the tokenizer,
    as llama.cpp leaves it)."""
    for key, value in gguf.metadata.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            wanted, fits = "a whole number", _whole(value)
        elif key in FLAGS:
            wanted, fits = "true or false", isinstance(value, bool)
        elif key in STRINGS:
            wanted, fits = "a string", isinstance(value, str)
        else:
            continue
        if not fits:
            raise GGUFError(f"{key} = {_show(value)} must be {wanted}")


def _count(gguf: GGUFFile, key: str, bound: int) -> Any:
    """Return an architecture count, checked to be whole and within its bounds (a list, for one given per layer)."""
    value = gguf.get(key)
    if value is None:
        return None
    least = 0 if key in MAY_BE_ZERO else 1
    if isinstance(value, list) and key in PER_LAYER and value:
        if all(_whole(item) and 0 <= item <= bound for item in value) and any(value):
            return value
    elif _whole(value) and least <= value <= bound:
        return value
    raise GGUFError(f"{_name(gguf, key)} = {_show(value)} must be a whole number from {least} to {bound}")


def _per_layer(gguf: GGUFFile, key: str, value: Any, layers: int | None) -> None:
    if isinstance(value, list) and len(value) != layers:
        raise GGUFError(f"{_name(gguf, key)} = {_show(value)} must give one count for each of the {layers} layers")
    if isinstance(value, list) and gguf.architecture in LLAMA_LAYOUTS and len(set(value)) > 1:
        raise GGUFError(f"{_name(gguf, key)} = {_show(value)} varies by layer, which a {gguf.architecture} cannot")


def _float(gguf: GGUFFile, key: str, least: float | None) -> None:
    value = gguf.get(key)
    if value is None:
        return
    if not _whole(value, (int, float)) or not math.isfinite(value) or (value < 0 if least is None else value <= least):
        raise GGUFError(f"{_name(gguf, key)} = {_show(value)} must be a finite number above {least or 0}")


def _uniform(value: Any) -> int | None:
    """Return a count given once or per layer (the same for each, once checked), or None."""
    return value[0] if isinstance(value, list) else value


def _whole(value: Any, kinds: tuple = (int,)) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _name(gguf: GGUFFile, key: str) -> str:
    return f"{gguf.architecture}.{key}"


def _show(value: Any) -> str:
    """Show a value in a refusal, a long list by its first items and its length."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:4]))}, ...] ({len(value)} items)"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
