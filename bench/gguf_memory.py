"""The memory of a 0.5B-class model in Q4_K_M: a random model of Qwen2.5-0.5B's shape, served from the Procfile.

Usage: make bench-gguf-memory            (writes the file once into .bench-llama-server/, then serves it)
No such model can be downloaded here, so the bench writes one: Qwen2.5-0.5B's dimensions (896 wide, 24 layers,
14 query and 2 key/value heads, 4,864 in the MLP, 151,936 tokens, a tied head) in the types llama-quantize gives a
Q4_K_M of it (Q5_0 where 896-wide rows cannot hold 256-weight super-blocks, Q4_K and Q6_K in the MLP's down
projection, Q8_0 for the embedding), with random weights under small scales. It prints the server's peak RSS
against the file's size plus the KV budget the server reports, after loads of 1 and 8 clients.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench.engines import cpu_summary
from bench.load import peak_rss_mb, print_table, run_load
from bench.serve import palaver, seconds_until_ready

ROOT = Path(__file__).resolve().parent.parent
SHAPE = {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "ffn": 4864, "vocab": 151936, "context": 32768}
SCALES = {"Q5_0": {0: 0.004}, "Q8_0": {0: 0.0004}, "Q4_K": {0: 0.002, 2: 0.001}, "Q6_K": {208: 0.0005}}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def random_blocks(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Return valid stored rows of a type: random weights, and float16 scales small enough to keep activations sane."""
    import gguf

    per_block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    units = rows * cols // per_block
    raw = rng.integers(0, 256, (units, block_bytes), dtype=np.uint8)
    for offset, scale in SCALES[kind].items():
        raw[:, offset : offset + 2] = np.full(units, scale, dtype=np.float16).view(np.uint8).reshape(units, 2)
    return raw.reshape(rows, -1)


def write_model(path: Path) -> None:
    """Write the random 0.5B-shaped Qwen2 GGUF file."""
    import gguf

    from palaver.engine.gguf.tokenizer import bytes_to_unicode

    s, rng = SHAPE, np.random.default_rng(0)
    head_dim = s["hidden"] // s["heads"]
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("random-qwen2.5-0.5b-shape")
    writer.add_block_count(s["layers"])
    writer.add_context_length(s["context"])
    writer.add_embedding_length(s["hidden"])
    writer.add_feed_forward_length(s["ffn"])
    writer.add_head_count(s["heads"])
    writer.add_head_count_kv(s["kv_heads"])
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    # Every byte as a token and one merge, plain words no merge reaches up to the real vocabulary's size (as
    # Qwen's vocabulary is mostly words), then the chat markers, its few control tokens.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    words = list(bytes_to_unicode().values()) + ["Ġt"]
    words += [f"word{i}" for i in range(s["vocab"] - len(words) - len(specials))]
    tokens = words + specials
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(words) + [3] * len(specials))
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_chat_template(CHATML)

    def blocks(name: str, kind: str, rows: int, cols: int) -> None:
        writer.add_tensor(name, random_blocks(kind, rows, cols, rng), raw_dtype=gguf.GGMLQuantizationType[kind])

    def vector(name: str, size: int, scale: float) -> None:
        writer.add_tensor(name, (1.0 + scale * rng.standard_normal(size)).astype(np.float32))

    blocks("token_embd.weight", "Q8_0", s["vocab"], s["hidden"])
    vector("output_norm.weight", s["hidden"], 0.1)
    q, kv = s["heads"] * head_dim, s["kv_heads"] * head_dim
    for layer in range(s["layers"]):
        prefix = f"blk.{layer}"
        vector(f"{prefix}.attn_norm.weight", s["hidden"], 0.1)
        vector(f"{prefix}.ffn_norm.weight", s["hidden"], 0.1)
        for name, rows in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
            blocks(f"{prefix}.{name}.weight", "Q5_0", rows, s["hidden"])
            vector(f"{prefix}.{name}.bias", rows, 0.1)
        blocks(f"{prefix}.attn_output.weight", "Q5_0", s["hidden"], q)
        blocks(f"{prefix}.ffn_gate.weight", "Q5_0", s["ffn"], s["hidden"])
        blocks(f"{prefix}.ffn_up.weight", "Q5_0", s["ffn"], s["hidden"])
        blocks(f"{prefix}.ffn_down.weight", "Q6_K" if layer % 2 else "Q4_K", s["hidden"], s["ffn"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    directory = ROOT / os.environ.get("LLAMA_SERVER_DIR", ".bench-llama-server")
    directory.mkdir(exist_ok=True)
    path = directory / "random-qwen2.5-0.5b-shape.Q4_K_M.gguf"
    if not path.exists():
        write_model(path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    size_mb = path.stat().st_size / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as cache, palaver(cache, str(path)) as (url, pid):
        seconds_until_ready(url, time.perf_counter(), timeout=600)
        ready = requests.get(url + "/readyz", timeout=10).json()
        budget_mb = ready["kv_cache_bytes"] / 1e6
        run_load(url, 1, 1, 8, None)
        for clients in (1, 8):
            rows.append((f"{clients}", run_load(url, clients, 2, 32, pid)))
        peak = peak_rss_mb(pid)
    print(f"\n{path.name} · {cpu_summary()}\n")
    print(f"engine {ready['engine']}, weights {ready['gguf']['tensor_types']}\n")
    print_table(rows, "clients")
    bound = 1.3 * (size_mb + budget_mb)
    print(
        "\n| file MB | KV budget MB | peak RSS MB | peak RSS over the file MB | 1.3 × (file + KV budget) MB | within |"
        f"\n|---|---|---|---|---|---|\n| {size_mb:.0f} | {budget_mb:.0f} | {peak:.0f} | {peak - size_mb:.0f} | "
        f"{bound:.0f} | {'yes' if peak <= bound else 'no'} |"
    )


if __name__ == "__main__":
    main()
