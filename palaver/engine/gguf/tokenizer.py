"""A GGUF file's byte-level BPE tokenizer as a tokenizer.json, built as transformers builds it, without transformers."""

from __future__ import annotations

import functools
import json
from typing import Any

from palaver.engine.gguf.file import GGUFFile

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types
# How text is split before merging, for the pre-tokenizer types whose vocabularies were learned on another split
# than GPT-2's (transformers' table, for the types served here; others are refused, and transformers builds them).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o's split (Phi-4-mini) and Mistral's Tekken (Mistral Nemo, Ministral): letters by case, digits in threes or
# alone.
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {
    "llama3": LLAMA3_SPLIT,
    "llama-v3": LLAMA3_SPLIT,
    "llama-bpe": LLAMA3_SPLIT,
    "smaug-bpe": LLAMA3_SPLIT,
    "qwen2": QWEN2_SPLIT,
    "deepseek-r1-qwen": QWEN2_SPLIT,
    "gpt-4o": GPT4O_SPLIT,
    "tekken": TEKKEN_SPLIT,
}
# Pre-tokenizer types that split as GPT-2 does (transformers gives them GPT-2's byte-level pre-tokenizer).
GPT2_SPLIT_TYPES = {"default", "gpt2", "smollm", "starcoder", "refact", "olmo"}
# Tokens that end a turn whatever a file names as its end of sequence (Gemma's files name <eos>, Phi-3's
# <|endoftext|>, but their chat templates end turns with these): llama.cpp stops at them too.
END_OF_TURN_TOKENS = frozenset(
    {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"}
)
SPECIAL_ROLES = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Return GPT-2's map from bytes to the printable characters that spell them in a byte-level vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, characters)}


def unsupported(gguf: GGUFFile) -> str | None:
    """Say why this file's tokenizer is not built here (transformers builds it instead), or None."""
    kind = gguf.metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        return f"its tokenizer is {kind!r}, not byte-level BPE"
    if "tokenizer.ggml.merges" not in gguf.metadata:
        return "its tokenizer lists no merges"
    pre = gguf.metadata.get("tokenizer.ggml.pre", "default")
    if pre not in SPLITS and pre not in GPT2_SPLIT_TYPES:
        return f"its pre-tokenizer {pre!r} is not one this builder knows"
    return None


def tokenizer_json(gguf: GGUFFile) -> str:
    """Return the tokenizer.json that transformers would build for this file's byte-level BPE tokenizer."""
    why = unsupported(gguf)
    if why is not None:
        raise ValueError(why)
    metadata = gguf.metadata
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[byte] for byte in token.encode("utf-8")): index
        for index, token in enumerate(tokens)
    }
    added: dict[int, dict[str, Any]] = {}

    def add(index: int, special: bool) -> None:
        if index not in added:
            added[index] = {
                "id": index,
                "content": tokens[index],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": special,
            }

    # Control tokens become special; one spelled outside the byte alphabet is llama.cpp mislabelling, and skipped.
    for index, (token, kind) in enumerate(zip(tokens, types)):
        if kind == CONTROL and set(token) <= alphabet:
            add(index, special=True)
    for role in SPECIAL_ROLES.values():
        named = metadata.get(f"tokenizer.ggml.{role}")
        if named is not None and 0 <= named < len(tokens):
            add(named, special=True)
    for index, (token, kind) in enumerate(zip(tokens, types)):
        if kind == USER_DEFINED and token in vocab:
            add(index, special=False)
    pre = metadata.get("tokenizer.ggml.pre", "default")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pre_tokenizer: dict[str, Any] = byte_level
    if pre in SPLITS:
        pre_tokenizer = {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLITS[pre]}, "behavior": "Isolated", "invert": False},
                {**byte_level, "use_regex": False},
            ],
        }
    merges = [merge.split(" ") for merge in metadata["tokenizer.ggml.merges"]]
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added[index] for index in sorted(added)],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return json.dumps(document, ensure_ascii=False)


def tokenizer_config(gguf: GGUFFile) -> dict[str, Any]:
    """Return the special tokens by role, and the chat template, as a tokenizer_config.json holds them."""
    metadata = gguf.metadata
    tokens = metadata.get("tokenizer.ggml.tokens", [])
    config: dict[str, Any] = {}
    for name, role in SPECIAL_ROLES.items():
        index = metadata.get(f"tokenizer.ggml.{role}")
        config[name] = tokens[index] if index is not None and 0 <= index < len(tokens) else None
    if metadata.get("tokenizer.chat_template"):
        config["chat_template"] = metadata["tokenizer.chat_template"]
    # Whether a prompt starts with BOS and ends with EOS. A SentencePiece file that does not say adds BOS, as llama.cpp
    # and transformers read it.
    for flag in ("add_bos_token", "add_eos_token"):
        value = metadata.get(f"tokenizer.ggml.{flag}")
        if isinstance(value, (bool, int)):
            config[flag] = bool(value)
    if metadata.get("tokenizer.ggml.model") == "llama":
        config.setdefault("add_bos_token", True)
    return config


def end_of_turn_ids(gguf: GGUFFile) -> list[int]:
    """Return the ids of the file's tokens that end a turn, beside its end-of-sequence token."""
    eos = gguf.metadata.get("tokenizer.ggml.eos_token_id")
    tokens = gguf.metadata.get("tokenizer.ggml.tokens", [])
    ends = {i for i, token in enumerate(tokens) if token in END_OF_TURN_TOKENS}
    return sorted(ends if eos is None else ends | {eos})
