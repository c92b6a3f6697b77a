"""Palaver, llama.cpp's own llama-server and llama-cpp-python's server, side by side on the embedded GGUF.

Usage: make bench-engines                       (all three, 1, 16 and 32 clients, then two CPU hogs at 8 clients,
                                                 a 1,000-token prompt's first token, Palaver's start and its
                                                 32 clients under PALAVER_MEMORY_LIMIT=512MB)
       .venv/bin/python -m bench.engines --servers palaver,llama-server --clients 1 --hogs 0
       .venv/bin/python -m bench.engines --servers palaver,palaver-fast   (PALAVER_ARITHMETIC=fast beside exact)
       .venv/bin/python -m bench.engines --weights Q4_K_M   (the embedded model re-quantised by llama-quantize)
       .venv/bin/python -m bench.engines --weights ,Q4_K_M  (the embedded file, then its Q4_K_M, in one run)
       .venv/bin/python -m bench.engines --model "$(.venv/bin/python -m bench.large_vocab)"   (a 262k vocabulary)
Each file's table ends with every server beside llama-server (its tokens/s and p95 latency over llama-server's at the
same load), then the fast mode's KL divergence on the file beside llama.cpp's (--kl-chunks 0 leaves it out).
Each server runs alone on the machine in turn, under the same closed-loop load (bench/load.py): every client
holds a conversation of --turns turns, greedy, --max-tokens tokens a reply. Builds the peers on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench.engine_servers import cpu_hogs, start
from bench.load import peak_rss_mb, print_table, run_load
from bench.serve import percentile
from tests.servers import procfile_server

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the quick brown fox jumps over a lazy dog while seven bright stars shine above green hills".split()


def cpu_summary() -> str:
    """Name the CPU and the vector extensions that matter for these kernels."""
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni"]
    return f"{model.group(1) if model else platform.processor()}, {os.cpu_count()} CPUs, " + " ".join(
        flag for flag in wanted if flag in flags
    )


def long_prompt(words: int, variant: int) -> str:
    """Return a prompt of about words tokens, whose first words differ by variant so no prefix cache helps."""
    return f"Story number {variant}: " + " ".join(WORDS[(i * 7 + variant) % len(WORDS)] for i in range(words))


def first_token_seconds(url: str, words: int, repeats: int = 3) -> tuple[float, int]:
    """Stream replies to long prompts one at a time; return the median seconds to the first text, and its tokens."""
    model = requests.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    times, tokens = [], 0
    for variant in range(repeats):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": long_prompt(words, variant)}],
            "max_tokens": 8,
            "temperature": 0,
        }
        started = time.perf_counter()
        with requests.post(url + "/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=120) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                chunk = json.loads(line[len(b"data: ") :]) if line.startswith(b"data: {") else {}
                if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                    times.append(time.perf_counter() - started)
                    break
        usage = requests.post(url + "/v1/chat/completions", json=body, timeout=120).json()["usage"]
        tokens = usage["prompt_tokens"]
    return percentile(times, 0.5), tokens


def palaver_start_seconds(cache_dir: str) -> float:
    """Return the seconds from starting the Procfile's command to a ready model (PALAVER_PRELOAD=1)."""
    env = {"PALAVER_CACHE_DIR": cache_dir, "PALAVER_PRELOAD": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    with procfile_server(env, wait_for="/readyz", timeout=300):
        return time.perf_counter() - started


def beside(rows: list[tuple[str, str, dict]], peer: str = "llama-server") -> list[str]:
    """Return a Markdown table of each other server's tokens/s at each client count, over the peer's at that count,
    with p95 latency's ratio beside it, and the server's peak RSS at its fewest and most clients."""
    runs: dict[tuple[str, str], dict] = {}
    for name, clients, row in rows:  # a load's own run, not the noisy-neighbour run's quiet half at the same count
        if clients.isdigit():
            runs.setdefault((name, clients), row)
    levels = sorted({int(clients) for name, clients in runs if name == peer})
    if not levels:
        return []
    lines = [
        f"| server | {' | '.join(f'{n} client' + ('s' if n > 1 else '') for n in levels)} | peak RSS MB |",
        "|---" * (len(levels) + 2) + "|",
    ]
    for name in dict.fromkeys(name for name, clients in runs if int(clients) in levels):  # at a load it ran
        cells = []
        for n in levels:
            row, theirs = runs.get((name, str(n))), runs[(peer, str(n))]
            if row is None:
                cells.append("-")
            elif name == peer or not theirs["tokens_per_s"]:
                cells.append(f"{row['tokens_per_s']:.1f}")
            else:
                ratio = row["tokens_per_s"] / theirs["tokens_per_s"]
                p95 = f"; p95 {row['p95'] / theirs['p95']:.2f}×" if n > 1 and theirs["p95"] else ""
                cells.append(f"{row['tokens_per_s']:.1f} ({ratio:.2f}×{p95})")
        memory = [runs[(name, str(n))]["peak_rss_mb"] for n in levels if (name, str(n)) in runs]
        lines.append(f"| {name} | {' | '.join(cells)} | {memory[0]:.0f} / {memory[-1]:.0f} |")
    return lines


def model_files(model: str, weights: str) -> list[str]:
    """Return the GGUF files to serve in turn: the model (the embedded one by default) as it is for an empty entry of
    weights, and re-quantised by llama-quantize for each type named."""
    import palaver.engine.model_sources as sources

    if weights and model:
        raise SystemExit("--weights re-quantises the embedded model; give it or --model, not both")
    files = []
    for kind in weights.split(","):
        if kind:
            quantise = [str(ROOT / "bench/llama_quantize.sh"), kind]
            files.append(subprocess.run(quantise, check=True, capture_output=True, text=True).stdout.strip())
        else:
            files.append(model or str(sources.embedded_gguf_path()))
    return files


def measure(gguf: str, args: argparse.Namespace, cache: str) -> tuple[list, list]:
    """Run every server on one file in turn; return the load rows and the long prompt's first tokens."""
    levels = [int(c) for c in args.clients.split(",") if c]
    rows, first_tokens = [], []
    servers = args.servers.split(",") + (["palaver-512MB"] if "palaver" in args.servers and args.limited else [])
    for name in servers:
        with start(name, gguf, cache) as (url, pid):
            run_load(url, 2, 1, 8, None)  # warm up: first calls pay one-off set-up
            if name.endswith("512MB"):
                for clients in [int(c) for c in args.limited.split(",")]:
                    rows.append((name, f"{clients}", run_load(url, clients, args.turns, args.max_tokens, pid)))
                continue
            for clients in levels:
                rows.append((name, f"{clients}", run_load(url, clients, args.turns, args.max_tokens, pid)))
            if args.prompt_words and name != "llama-cpp-python":
                seconds, tokens = first_token_seconds(url, args.prompt_words)
                first_tokens.append((name, seconds, tokens, peak_rss_mb(pid)))
            if args.hogs and name != "llama-cpp-python":
                quiet = run_load(url, args.hog_clients, args.turns, args.max_tokens, pid)
                rows.append((name, f"{args.hog_clients}", quiet))
                with cpu_hogs(args.hogs):
                    noisy = run_load(url, args.hog_clients, args.turns, args.max_tokens, pid)
                rows.append((name, f"{args.hog_clients} + {args.hogs} CPU hogs", noisy))
    return rows, first_tokens


def report(gguf: str, args: argparse.Namespace, rows: list, first_tokens: list) -> None:
    """Print one file's tables: the load, each server beside llama-server, the first tokens and the KL row."""
    print(f"\n{Path(gguf).name} · {args.turns} turns × {args.max_tokens} tokens a reply, greedy · {cpu_summary()}\n")
    print_table([(f"{name} | {clients}", row) for name, clients, row in rows], "server | clients")
    ratios = beside(rows)
    if ratios:
        print("\nCompletion tokens/s, and each beside llama-server's (× its tokens/s; p95 latency × its p95):\n")
        print("\n".join(ratios))
    if first_tokens:
        print("\n| server | prompt tokens | time to first token, one client (median of 3) |\n|---|---|---|")
        for name, seconds, tokens, _ in first_tokens:
            print(f"| {name} | {tokens} | {seconds:.3f} s |")
    if args.kl_chunks:  # the fast mode's price in agreement, beside llama.cpp's, on the same file (bench.kl_divergence)
        from bench.kl_divergence import divergence_row, print_markdown

        print("\nKL divergence from the file's float32 model (bench/kl_divergence.py):\n")
        print_markdown([divergence_row(Path(gguf).name, Path(gguf), args.kl_chunks, 512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="palaver,llama-server,llama-cpp-python")
    parser.add_argument("--clients", default="1,16,32", help="comma-separated client counts")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes for the noisy-neighbour run")
    parser.add_argument("--hog-clients", type=int, default=8, help="clients during the noisy-neighbour run")
    parser.add_argument("--prompt-words", type=int, default=950, help="words of the long prompt (about 1,000 tokens)")
    parser.add_argument("--limited", default="32", help="client counts for Palaver under PALAVER_MEMORY_LIMIT=512MB")
    parser.add_argument(
        "--weights",
        default="",
        help="comma-separated llama-quantize types (Q4_K_M...) to re-quantise the model to, served in turn; an "
        "empty entry serves it as it is (',Q4_K_M': both)",
    )
    parser.add_argument("--model", default="", help="a GGUF file instead of the embedded one (bench.large_vocab's)")
    parser.add_argument("--kl-chunks", type=int, default=40, help="512-token chunks for the KL table (0: none)")
    args = parser.parse_args()
    files = model_files(args.model, args.weights)
    starts = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        if "palaver" in args.servers.split(","):
            with tempfile.TemporaryDirectory() as empty:
                starts = [palaver_start_seconds(empty), palaver_start_seconds(empty)]  # empty cache, then warm
        for gguf in files:
            report(gguf, args, *measure(gguf, args, cache))
    if starts:
        print(
            f"\nPalaver ready (PALAVER_PRELOAD=1, from process start): {starts[0]:.1f} s with an empty cache, "
            f"{starts[1]:.1f} s warm"
        )


if __name__ == "__main__":
    main()
