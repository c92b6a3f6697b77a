"""Grammar libraries side by side on the embedded model's vocabulary: schema compile time and mask time per token.

Usage: make bench-grammars    (llguidance, which Palaver uses; xgrammar and outlines-core too where importable)
xgrammar requires torch, transformers and triton, and outlines-core is not a Palaver dependency: to measure them,
install them apart (`pip install --no-deps xgrammar apache-tvm-ffi` and `pip install outlines-core` into a
scratch directory) and put it on PYTHONPATH. Each library compiles the same two schemas, then computes the mask
at every step of the same compact JSON text that the schema allows.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable

import numpy as np

from bench.engines import cpu_summary

SCHEMAS = {
    "a string of 1,000+ characters": {
        "type": "object",
        "properties": {"answer": {"type": "string", "minLength": 1000}},
        "required": ["answer"],
        "additionalProperties": False,
    },
    "nested object, array, enum, bounds": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 999},
                    "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3},
                },
                "required": ["id", "tags"],
                "additionalProperties": False,
            },
            "answer": {"type": "string"},
        },
        "required": ["user", "answer"],
        "additionalProperties": False,
    },
}
# A reply each schema allows, in compact JSON, whose tokens every library is stepped through.
TEXTS = {
    "a string of 1,000+ characters": '{"answer":"The quick brown fox jumps over the lazy dog and runs into the forest',
    "nested object, array, enum, bounds": '{"user":{"id":42,"tags":["x","y"]},"answer":"fine, thanks, and you?"}',
}


def vocabulary() -> tuple[list[bytes], int, dict[str, list[int]], str]:
    """Return the embedded model's tokens' bytes, its end token, each text's token ids, and its tokenizer.json."""
    from palaver.engine.decoding.constraints import Constraints
    from palaver.engine.gguf.file import read_gguf
    from palaver.engine.gguf.tokenizer import tokenizer_config, tokenizer_json
    from palaver.engine.model_sources import embedded_gguf_path
    from palaver.engine.prompting.file_tokenizer import FileTokenizer

    gguf = read_gguf(embedded_gguf_path())
    source = tokenizer_json(gguf)
    tokenizer = FileTokenizer(source, tokenizer_config(gguf))
    token_bytes = Constraints(tokenizer, len(tokenizer), tokenizer.eos_token_id).token_bytes()
    ids = {name: tokenizer.encode(text, add_special_tokens=False) for name, text in TEXTS.items()}
    return token_bytes, int(tokenizer.eos_token_id), ids, source


def timed_masks(ids: list[int], mask: Callable[[], object], take: Callable[[int], bool]) -> list[float]:
    """Return the seconds each step's mask took, over the text's tokens; a library that refuses one fails."""
    times = []
    for token in ids:
        started = time.perf_counter()
        mask()
        times.append(time.perf_counter() - started)
        if not take(token):
            raise AssertionError(f"token {token} of a text the schema allows was refused")
    return times


def llguidance_rows(token_bytes, eos, ids, source) -> list[tuple[str, str, float, list[float]]]:
    from llguidance import LLMatcher, LLTokenizer

    from palaver.core.json_schemas import COMPILE_OPTIONS

    tokens = LLTokenizer(source, n_vocab=len(token_bytes), eos_token=eos)
    rows = []
    for name, schema in SCHEMAS.items():
        started = time.perf_counter()
        matcher = LLMatcher(tokens, LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=COMPILE_OPTIONS))
        compiled = time.perf_counter() - started
        rows.append(
            ("llguidance", name, compiled, timed_masks(ids[name], matcher.compute_logit_bias, matcher.consume_token))
        )
    return rows


def xgrammar_rows(token_bytes, eos, ids, source) -> list[tuple[str, str, float, list[float]]]:
    import xgrammar

    info = xgrammar.TokenizerInfo(
        token_bytes, vocab_type=xgrammar.VocabType.RAW, vocab_size=len(token_bytes), stop_token_ids=[eos]
    )
    compiler = xgrammar.GrammarCompiler(info, max_threads=1)
    rows = []
    for name, schema in SCHEMAS.items():
        started = time.perf_counter()
        compiled_grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        compiled = time.perf_counter() - started
        matcher = xgrammar.GrammarMatcher(compiled_grammar)
        bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
        masks = timed_masks(
            ids[name], functools.partial(matcher.fill_next_token_bitmask, bitmask), matcher.accept_token
        )
        rows.append(("xgrammar", name, compiled, masks))
    return rows


def outlines_core_rows(token_bytes, eos, ids, source) -> list[tuple[str, str, float, list[float]]]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    by_bytes: dict[bytes, list[int]] = {}
    for index, raw in enumerate(token_bytes):
        if index != eos and raw:
            by_bytes.setdefault(raw, []).append(index)
    vocabulary_ = Vocabulary(eos, by_bytes)
    rows = []
    for name, schema in SCHEMAS.items():
        started = time.perf_counter()
        index = Index(build_regex_from_schema(json.dumps(schema)), vocabulary_)
        compiled = time.perf_counter() - started
        guide = Guide(index)

        def take(token: int, guide=guide) -> bool:
            if token not in guide.get_tokens():
                return False
            guide.advance(token)
            return True

        rows.append(("outlines-core", name, compiled, timed_masks(ids[name], guide.get_tokens, take)))
    return rows


def main() -> None:
    token_bytes, eos, ids, source = vocabulary()
    rows = []
    for measure in (llguidance_rows, xgrammar_rows, outlines_core_rows):
        try:
            rows += measure(token_bytes, eos, ids, source)
        except ImportError as exc:
            print(f"{measure.__name__.removesuffix('_rows')}: not importable here ({exc.name})")
    print(f"\n{len(token_bytes):,}-token vocabulary · {cpu_summary()}\n")
    print("| library | schema | compile ms | mask per token, median ms | mask, worst ms |\n|---|---|---|---|---|")
    for library, name, compiled, masks in rows:
        median = f"{np.median(masks) * 1e3:.3f}" if len(masks) > 1 else "–"
        worst = f"{max(masks) * 1e3:.3f}" if len(masks) > 1 else "–"
        print(f"| {library} | {name} | {compiled * 1e3:.2f} | {median} | {worst} |")


if __name__ == "__main__":
    main()
