"""Write a model of Gemma 3 270M's shape, with its 262,144-token vocabulary and random weights, as a GGUF file.

Usage: .venv/bin/python -m bench.large_vocab          (prints the file's path; written once)
       make bench-engines BENCH_ARGS="--model $(.venv/bin/python -m bench.large_vocab) --clients 1,16"

No such model can be downloaded here, so the benchmarks build one: Gemma 3 270M's dimensions (18 layers, 640 wide,
4 query heads and 1 key/value head of 256, an MLP of 2,048, five sliding layers of 512 positions to one global),
its vocabulary's size, and about its Q4_K_M file's size (the 262,144 x 640 embedding, which is also the head, in
Q8_0; the layers' matrices in Q4_0, since no K-quant fits a width of 640). The vocabulary
is the embedded model's byte-level BPE (its tokens, merges and chat template) padded with tokens no text makes, so
both servers tokenize real text and every step computes and samples over 262,144 logits.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf.quants import quantize

from palaver.engine.gguf.file import read_gguf
from palaver.engine.model_sources import embedded_gguf_path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / ".bench-llama-server" / "gemma3-270m-shape-262k-vocab.gguf"
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, WINDOW = 262_144, 640, 2048, 18, 4, 1, 256, 512


def tokenizer_of_embedded() -> dict:
    """Return the embedded file's tokenizer metadata."""
    metadata = read_gguf(embedded_gguf_path()).metadata
    return {key: value for key, value in metadata.items() if key.startswith("tokenizer.")}


def random_matrix(rng: np.random.Generator, rows: int, cols: int, kind: gguf.GGMLQuantizationType) -> np.ndarray:
    """Return rows x cols of weights drawn as a trained model's are spread, quantised to kind."""
    weights = rng.standard_normal((rows, cols), dtype=np.float32) * (1.0 / np.sqrt(cols))
    return quantize(weights, kind)


def build(path: Path = OUTPUT) -> Path:
    """Write the file unless it exists; return its path."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(270)
    tokenizer = tokenizer_of_embedded()
    tokens = list(tokenizer["tokenizer.ggml.tokens"])
    types = list(tokenizer["tokenizer.ggml.token_type"])
    padding = VOCAB - len(tokens)
    tokens += [f"<unused{index}>" for index in range(padding)]
    types += [1] * padding
    partial = path.with_suffix(".part")
    writer = gguf.GGUFWriter(partial, "gemma3")
    writer.add_name("gemma3-270m-shape-262k-vocab (random weights)")
    writer.add_block_count(LAYERS)
    writer.add_context_length(32_768)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(WINDOW)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(str(tokenizer.get("tokenizer.ggml.pre", "default")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(tokenizer["tokenizer.ggml.merges"]))
    for key, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("padding_token_id", writer.add_pad_token_id),
    ):
        if f"tokenizer.ggml.{key}" in tokenizer:
            add(int(tokenizer[f"tokenizer.ggml.{key}"]))
    writer.add_chat_template(str(tokenizer["tokenizer.chat_template"]))
    q8, q4 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0
    writer.add_tensor("token_embd.weight", random_matrix(rng, VOCAB, HIDDEN, q8), raw_dtype=q8)
    norms = lambda width: (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32)  # noqa: E731
    writer.add_tensor("output_norm.weight", norms(HIDDEN))
    shapes = {
        "attn_q": (HEADS * HEAD_DIM, HIDDEN),
        "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN),
        "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
        "attn_output": (HIDDEN, HEADS * HEAD_DIM),
        "ffn_gate": (FFN, HIDDEN),
        "ffn_up": (FFN, HIDDEN),
        "ffn_down": (HIDDEN, FFN),
    }
    for layer in range(LAYERS):
        for name in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            writer.add_tensor(f"blk.{layer}.{name}.weight", norms(HIDDEN))
        for name in ("attn_q_norm", "attn_k_norm"):
            writer.add_tensor(f"blk.{layer}.{name}.weight", norms(HEAD_DIM))
        for name, (rows, cols) in shapes.items():
            writer.add_tensor(f"blk.{layer}.{name}.weight", random_matrix(rng, rows, cols, q4), raw_dtype=q4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.rename(path)
    return path


if __name__ == "__main__":
    print(build())
