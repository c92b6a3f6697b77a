"""The fast arithmetic's error, beside llama.cpp's own: KL divergence from each file's float32 model over a held text.

Usage: make bench-kl                                   (the embedded file and its re-quantisations, below)
       .venv/bin/python -m bench.kl_divergence --kinds Q4_1,Q4_K_M --chunks 40
       make bench-kl BENCH_ARGS="--kv q8_0 --kinds Q4_1,Q4_K_M"   (what a q8_0 KV cache adds, beside llama.cpp's)

For each file, Palaver's exact mode (each weight de-quantised to float32, float32 arithmetic: the file's float32
model) is the reference, and its fast mode (int8 activations, integer dot products) is measured against it. llama.cpp
is measured the same way with its own tools: `llama-perplexity --kl-divergence` of the file against the file
de-quantised to F32 by `llama-quantize`. Both score what llama-perplexity scores: the text cut into chunks of --ctx
tokens, and in each chunk the next-token distributions of its second half.

With --kv q8_0, what a q8_0 KV cache adds is measured instead: each file's exact mode with a q8_0 cache against the
same with float16, and llama.cpp's `-ctk q8_0 -ctv q8_0` against its float16 cache on the same file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bench.engines import cpu_summary
from palaver.engine.gguf.file import TYPE_NAMES, read_gguf, row_weights
from palaver.engine.gguf.tokenizer import tokenizer_json
from palaver.engine.machine import available_cores
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.native.binding import NativeModel
from palaver.engine.native.loading import llama_config

ROOT = Path(__file__).resolve().parent.parent
# Free prose every Debian machine holds: the licence texts in a fixed order, 30,078 of the embedded model's tokens.
HELD_TEXTS = ["GPL-3", "GPL-2", "LGPL-2.1", "MPL-2.0", "Apache-2.0", "GFDL-1.3", "Artistic"]
# The embedded file as it is, a user's usual mixture, and each block type as far as the shapes allow (--pure:
# the K-quants take only rows that are whole 256-weight blocks, the 1,536-wide ones here).
KINDS = ["Q4_1", "Q4_K_M", "Q4_0-pure", "Q5_0-pure", "Q5_1-pure", "Q8_0-pure", "Q2_K-pure", "Q3_K_M-pure"]
KINDS += ["Q4_K_M-pure", "Q5_K_M-pure", "Q6_K-pure"]


@dataclass
class Divergence:
    """The mean KL divergence from the reference, its standard error, and how often the top token is the same."""

    mean: float
    error: float
    same_top: float


def held_text() -> str:
    """Return the held text: the licence texts joined."""
    return "\n\n".join(Path("/usr/share/common-licenses", name).read_text() for name in HELD_TEXTS)


def quantized_file(kind: str) -> Path:
    """Return the embedded file (Q4_1), or its re-quantisation by llama-quantize ('Q4_0-pure': every tensor Q4_0)."""
    if kind == "Q4_1":
        return embedded_gguf_path()
    ftype, _, pure = kind.partition("-")
    return requantized(ftype, embedded_gguf_path(), pure)


def requantized(ftype: str, source: Path, pure: str = "") -> Path:
    """Run bench/llama_quantize.sh; return the file it wrote."""
    command = ["bench/llama_quantize.sh", ftype, str(source), pure]
    return ROOT / subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def chunks_of(path: Path, text: str, count: int, ctx: int) -> list[list[int]]:
    """Tokenise the text with the file's vocabulary; cut it into count chunks of ctx tokens, as llama-perplexity."""
    gguf = read_gguf(path)
    tokens = Tokenizer.from_str(tokenizer_json(gguf)).encode(text, add_special_tokens=False).ids
    if len(tokens) < count * ctx:
        raise SystemExit(f"the held text is {len(tokens)} tokens, fewer than {count} chunks of {ctx}")
    chunks = [tokens[index * ctx : (index + 1) * ctx] for index in range(count)]
    if gguf.metadata.get("tokenizer.ggml.add_bos_token", False):  # llama-perplexity puts BOS first in each chunk
        bos = int(gguf.metadata["tokenizer.ggml.bos_token_id"])
        chunks = [[bos, *chunk[1:]] for chunk in chunks]
    return chunks


def scored_log_probs(model: NativeModel, chunk: list[int], kv_type: str = "f16") -> np.ndarray:
    """Return the log-probabilities after each token of the chunk's second half but its last, in float64."""
    cache = model.new_cache(16, len(chunk) // 16 + 2, kv_type)
    try:
        sequence = cache.new_sequence()
        assert cache.reserve(sequence, len(chunk))
        first = len(chunk) // 2
        cache.step_rows([sequence], [chunk[:first]], [0])
        logits = cache.step_rows([sequence], [chunk[first:-1]], [2])[0]
    finally:
        cache.close()
    assert logits is not None
    shifted = logits.astype(np.float64)
    shifted -= shifted.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def palaver_divergence(path: Path, chunks: list[list[int]], kv: str = "f16") -> Divergence:
    """Measure the fast mode's KL divergence from the exact mode (the file's float32 model) over the chunks; with
    kv q8_0, the exact mode's with a q8_0 KV cache from the same with float16."""
    gguf = read_gguf(path)
    models = {
        arithmetic: NativeModel(path, llama_config(gguf), gguf.tensors, available_cores(), arithmetic=arithmetic)
        for arithmetic in (("exact",) if kv != "f16" else ("exact", "fast"))
    }
    compared = [(models["exact"], "f16"), (models["exact"], kv) if kv != "f16" else (models["fast"], "f16")]
    divergences, same = [], []
    for chunk in chunks:
        reference, measured = (scored_log_probs(model, chunk, kv_type) for model, kv_type in compared)
        divergences.append((np.exp(reference) * (reference - measured)).sum(axis=1))
        same.append(reference.argmax(axis=1) == measured.argmax(axis=1))
    for model in models.values():
        model.close()
    values = np.concatenate(divergences)
    return Divergence(values.mean(), values.std(ddof=1) / np.sqrt(len(values)), np.concatenate(same).mean())


def llama_cpp_divergence(path: Path, text: str, count: int, ctx: int, kv: str = "f16") -> Divergence:
    """Measure llama.cpp's KL divergence on the file from the file de-quantised to F32, with llama-perplexity; with
    kv q8_0, the file with a q8_0 KV cache from the same file with float16 (flash attention, which a quantised V
    cache needs, in both)."""
    server = Path(
        subprocess.run(["bench/llama_server.sh"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    )
    binary = server.parent / "llama-perplexity"
    if not binary.exists():
        subprocess.run(
            ["cmake", "--build", str(server.parent.parent), "--target", "llama-perplexity", "-j2"], check=True
        )
    reference = requantized("F32", path) if kv == "f16" else path
    cache_flags = ["-fa", "on", "-ctk", kv, "-ctv", kv] if kv != "f16" else []
    threads = str(available_cores())
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "text.txt").write_text(text)
        common = [str(binary), "-f", f"{scratch}/text.txt", "-c", str(ctx), "--chunks", str(count), "-t", threads]
        common += ["--kl-divergence-base", f"{scratch}/base.kld"]
        env = {"LD_LIBRARY_PATH": str(binary.parent)}
        base_flags = ["-fa", "on"] if cache_flags else []
        subprocess.run([*common, *base_flags, "-m", str(reference)], check=True, capture_output=True, env=env)
        output = subprocess.run(
            [*common, *cache_flags, "-m", str(path), "--kl-divergence"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
    log = output.stdout + output.stderr
    mean = re.search(r"Mean\s+KLD:\s+([-\d.]+)\s+±\s+([\d.]+)", log)
    same_top = re.search(r"Same top p:\s+([\d.]+)", log)
    if mean is None or same_top is None:
        raise SystemExit("llama-perplexity printed no KL divergence:\n" + log[-3000:])
    return Divergence(float(mean.group(1)), float(mean.group(2)), float(same_top.group(1)) / 100)


def block_types(path: Path) -> str:
    """Name the file's block types, by how many weights each holds, most first."""
    counts: dict[str, int] = {}
    for entry in read_gguf(path).tensors:
        name = TYPE_NAMES[entry.qtype]
        counts[name] = counts.get(name, 0) + row_weights(entry) * (entry.shape[0] if len(entry.shape) == 2 else 1)
    total = sum(counts.values())
    return ", ".join(f"{name} {count / total:.0%}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def print_markdown(rows: list[dict]) -> None:
    """Print rows of the same keys as a Markdown table."""
    print("| " + " | ".join(rows[0]) + " |")
    print("|---" * len(rows[0]) + "|")
    for row in rows:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="files: Q4_1 (embedded), Q4_K_M, Q4_0-pure, …")
    parser.add_argument("--chunks", type=int, default=40, help="chunks of the held text (40 × 512 = 20,480 tokens)")
    parser.add_argument("--ctx", type=int, default=512, help="tokens a chunk")
    parser.add_argument("--kv", default="f16", choices=["f16", "q8_0"], help="q8_0: what a q8_0 KV cache adds")
    args = parser.parse_args()
    print(f"CPU: {cpu_summary()}")
    rows = []
    for kind in args.kinds.split(","):
        rows.append(divergence_row(kind, quantized_file(kind), args.chunks, args.ctx, args.kv))
        print(" · ".join(f"{name}: {value}" for name, value in rows[-1].items()), flush=True)
    print_markdown(rows)


def divergence_row(label: str, path: Path, count: int, ctx: int, kv: str = "f16") -> dict:
    """Measure one file, Palaver beside llama.cpp, over count chunks of ctx tokens of the held text; a table row."""
    text = held_text()
    ours = palaver_divergence(path, chunks_of(path, text, count, ctx), kv)
    theirs = llama_cpp_divergence(path, text, count, ctx, kv)
    measured = "Palaver fast" if kv == "f16" else f"Palaver KV {kv}"
    return {
        "file": label,
        "block types (share of weights)": block_types(path),
        "scored tokens": count * (ctx - ctx // 2 - 1),
        f"{measured}: mean KLD": f"{ours.mean:.6f} ± {ours.error:.6f}",
        "same top token": f"{ours.same_top:.2%}",
        "llama.cpp: mean KLD": f"{theirs.mean:.6f} ± {theirs.error:.6f}",
        "llama.cpp same top": f"{theirs.same_top:.2%}",
    }


if __name__ == "__main__":
    main()
