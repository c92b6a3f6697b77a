"""Two models in one server: the cost of a switch, and two models served at once against each alone.

Usage: make bench-models          (the embedded SmolLM2 twice, as two configured models, from the Procfile)
Both models are the embedded file under two names, so neither is cheaper than the other and any gap between
"alone" and "at once" is the cost of serving two models instead of one. It prints:
  - time to first token for a model not yet loaded (cold), loaded (warm), and unloaded then asked for again;
  - completion tokens/s of each model alone, of both at once, and of one model with both loads' clients (what
    the same load costs in one batch), with each one's time to first token;
  - the server's resident memory before a model loads, while it is loaded, and once PALAVER_KEEP_ALIVE unloaded
    it, for the embedded model (native step) and a random GPT-2 of 200 MB the bench writes (transformers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.engines import cpu_summary
from bench.load import converse, peak_rss_mb, run_clients
from bench.serve import percentile
from palaver.engine.model_sources import embedded_gguf_path
from tests.servers import procfile_server

NAMES = ("smol-a", "smol-b")


def first_token_seconds(url: str, model: str) -> float:
    """Stream one short reply from model; return the seconds to its first text."""
    results: list = []
    errors: list = []
    converse(url, model, 0, 1, 8, results, errors)
    if errors:
        raise SystemExit(f"{model}: {errors[0]}")
    return results[0][1]


def write_gpt2(path: Path) -> Path:
    """Write a random GPT-2, 1,024 wide and 4 layers deep (50M weights, 200 MB), with GPT-2's tokenizer layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={chr(c): i for i, c in enumerate(range(33, 127))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="~", bos_token="~", pad_token="~")
    end = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=1024, n_layer=4, n_head=8, n_positions=256, bos_token_id=end, eos_token_id=end
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resident_mb(url: str) -> float:
    return requests.get(url + "/readyz", timeout=10).json()["memory"]["resident_bytes"] / 1e6


def memory_after_unload(env: dict[str, str]) -> list[tuple[str, float, float, float]]:
    """Load each of two models and let PALAVER_KEEP_ALIVE unload it; return (model, before, loaded, after) MB."""
    scratch = Path(tempfile.mkdtemp(prefix="palaver-bench-gpt2-"))
    models = f"embedded=,gpt2={write_gpt2(scratch / 'gpt2')}"
    rows = []
    with procfile_server({**env, "PALAVER_MODELS": models, "PALAVER_KEEP_ALIVE": "2s"}, "/healthz", 300) as server:
        for model in ("embedded", "gpt2"):
            before = resident_mb(server.url)
            body = {"model": model, "prompt": "hello", "max_tokens": 4}
            requests.post(server.url + "/v1/completions", json=body, timeout=300).raise_for_status()
            loaded = resident_mb(server.url)
            while model_state(server.url, model) != "unloaded":
                time.sleep(0.1)
            rows.append((model, before, loaded, resident_mb(server.url)))
    return rows


def model_state(url: str, model: str) -> str:
    return requests.get(f"{url}/v1/models/{model}", timeout=10).json()["state"]


def load(url: str, per_model: dict[str, int], turns: int, max_tokens: int) -> dict[str, dict]:
    """Run clients on each model at once; return each model's tokens/s and time-to-first-token p50 and p95."""
    results, errors, wall = run_clients(url, per_model, turns, max_tokens)
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    return {
        model: {
            "tokens_per_s": sum(r[2] for r in rows) / wall,
            "ttft_p50": statistics.median(r[1] for r in rows),
            "ttft_p95": percentile([r[1] for r in rows], 0.95),
        }
        for model, rows in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="clients per model")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    path = embedded_gguf_path()
    env = {
        "PALAVER_MODELS": ",".join(f"{name}={path}" for name in NAMES),
        "PALAVER_CACHE_DIR": tempfile.mkdtemp(prefix="palaver-bench-models-"),
        "PALAVER_CLIENT_SHARE": "0",  # the benchmark plays many clients from one address
        "PALAVER_MAX_PENDING": "256",
        "HF_HUB_OFFLINE": "1",
    }
    print(f"CPU: {cpu_summary()}")
    with procfile_server(env, wait_for="/healthz", timeout=300) as server:
        url = server.url
        cold = first_token_seconds(url, NAMES[1])  # loads it: the file is in the page cache after the first
        warm = statistics.median(first_token_seconds(url, NAMES[1]) for _ in range(5))
        load(url, {name: 2 for name in NAMES}, 1, 16)  # warm both up: first requests pay one-time costs
        alone = {name: load(url, {name: args.clients}, args.turns, args.max_tokens)[name] for name in NAMES}
        both = load(url, {name: args.clients for name in NAMES}, args.turns, args.max_tokens)
        doubled = load(url, {NAMES[0]: 2 * args.clients}, args.turns, args.max_tokens)[NAMES[0]]
        peak = peak_rss_mb(server.pid)
    with procfile_server({**env, "PALAVER_KEEP_ALIVE": "1s"}, wait_for="/healthz", timeout=300) as server:
        first_token_seconds(server.url, NAMES[1])
        while model_state(server.url, NAMES[1]) != "unloaded":  # PALAVER_KEEP_ALIVE unloads it
            time.sleep(0.1)
        again = first_token_seconds(server.url, NAMES[1])
    print()
    print("| switch | time to first token, s |")
    print("|---|---|")
    print(f"| a model not loaded yet (cold: loads, then answers) | {cold:.2f} |")
    print(f"| a loaded model (warm, median of 5) | {warm:.3f} |")
    print(f"| a model unloaded when idle, asked for again | {again:.2f} |")
    print()
    print(f"{args.clients} clients per model, {args.turns}-turn conversations, {args.max_tokens} tokens a reply:")
    print()
    print("| served | model | tokens/s | TTFT p50, s | TTFT p95, s |")
    print("|---|---|---|---|---|")
    for name in NAMES:
        row = alone[name]
        print(f"| alone | {name} | {row['tokens_per_s']:.1f} | {row['ttft_p50']:.2f} | {row['ttft_p95']:.2f} |")
    for name in NAMES:
        row = both[name]
        print(f"| both at once | {name} | {row['tokens_per_s']:.1f} | {row['ttft_p50']:.2f} | {row['ttft_p95']:.2f} |")
    total = sum(row["tokens_per_s"] for row in both.values())
    print(f"| both at once | total | {total:.1f} | | |")
    row = doubled
    print(
        f"| one model, {2 * args.clients} clients | {NAMES[0]} | {row['tokens_per_s']:.1f} | {row['ttft_p50']:.2f} "
        f"| {row['ttft_p95']:.2f} |"
    )
    print()
    print(f"peak RSS of the server: {peak:.0f} MB")
    print()
    print("| model | resident MB before it loads | loaded | after PALAVER_KEEP_ALIVE unloaded it |")
    print("|---|---|---|---|")
    for model, before, loaded, after in memory_after_unload(env):
        print(f"| {model} | {before:.0f} | {loaded:.0f} | {after:.0f} |")


if __name__ == "__main__":
    main()
