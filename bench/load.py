"""Drive C concurrent clients, each holding a T-turn conversation, through /v1/chat/completions.

Usage: make bench-load                 (Palaver, started from the Procfile with the embedded model;
                                        set PALAVER_CACHE_DIR to reuse a converted model)
       .venv/bin/python -m bench.load --url http://127.0.0.1:8080 --pid PID   (any OpenAI-compatible server)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.serve import palaver, percentile, seconds_until_ready

OPENERS = [
    "Tell me about the sea.",
    "What should I cook tonight?",
    "Give me a tip for learning Python.",
    "Why is the sky blue?",
    "Describe your favourite book.",
    "How do bees make honey?",
]
FOLLOW_UP = "Tell me more."


def peak_rss_mb(pid: int) -> float:
    """Return the peak resident memory of a process and its children, in MB."""
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    peak = 0.0
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def converse(
    url: str,
    model: str,
    client: int,
    turns: int,
    max_tokens: int,
    results: list,
    errors: list,
    extra: dict | None = None,
) -> None:
    """Hold one conversation, streaming each reply to time its first token; extra adds fields to each request."""
    messages = []
    for turn in range(turns):
        messages.append({"role": "user", "content": OPENERS[client % len(OPENERS)] if turn == 0 else FOLLOW_UP})
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        started, first, text, tokens, chunks = time.perf_counter(), None, "", 0, 0
        try:
            with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=300) as response:
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                for line in response.iter_lines():
                    if not line.startswith(b"data: {"):
                        continue
                    chunk = json.loads(line[len(b"data: ") :])
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = first or time.perf_counter() - started
                        text += chunk["choices"][0]["delta"]["content"]
                        chunks += 1
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
        except requests.RequestException as exc:
            errors.append(str(exc))
            return
        # A server that reports no usage when streaming (llama-cpp-python) sends one token per chunk.
        results.append((time.perf_counter() - started, first or 0.0, tokens or chunks))
        messages.append({"role": "assistant", "content": text})


def converse_on_page(url: str, model: str, client: int, turns: int, max_tokens: int, results: list, errors: list):
    """Hold one conversation through the page's streaming form, as a browser does: the server keeps the history."""
    browser = requests.Session()
    for turn in range(turns):
        text = OPENERS[client % len(OPENERS)] if turn == 0 else FOLLOW_UP
        form = {"textbox": text, "max_new_tokens": max_tokens, "temperature": 0}
        started, first, tokens = time.perf_counter(), None, 0
        try:
            with browser.post(
                url + "/", data=form, headers={"Accept": "text/event-stream"}, stream=True, timeout=300
            ) as response:
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                for line in response.iter_lines():
                    if not line.startswith(b"data: {"):
                        continue
                    event = json.loads(line[len(b"data: ") :])
                    if event.get("delta"):
                        first = first or time.perf_counter() - started
                    if event.get("done"):
                        tokens = event["usage"]["completion_tokens"]
        except requests.RequestException as exc:
            errors.append(str(exc))
            return
        results.append((time.perf_counter() - started, first or 0.0, tokens))


def run_clients(
    url: str, per_model: dict[str, int], turns: int, max_tokens: int, client=converse
) -> tuple[dict[str, list], list, float]:
    """Run each model's clients at once until all are done; return each model's results, the errors, the seconds."""
    results: dict[str, list] = {model: [] for model in per_model}
    errors: list = []
    threads = [
        threading.Thread(target=client, args=(url, model, n, turns, max_tokens, results[model], errors))
        for model, clients in per_model.items()
        for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors, time.perf_counter() - started


def run_load(url: str, clients: int, turns: int, max_tokens: int, pid: int | None, client=converse) -> dict:
    """Run one load level and summarise it; client holds one conversation (through /v1 unless told otherwise)."""
    model = requests.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]
    by_model, errors, wall = run_clients(url, {model: clients}, turns, max_tokens, client)
    results = by_model[model]
    latencies = [r[0] for r in results] or [0.0]
    return {
        "clients": clients,
        "tokens_per_s": sum(r[2] for r in results) / wall,
        "replies_per_s": len(results) / wall,
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "ttft_p50": statistics.median(r[1] for r in results) if results else 0.0,
        "errors": len(errors),
        "peak_rss_mb": peak_rss_mb(pid) if pid else float("nan"),
        "error_samples": errors[:3],
    }


def print_table(rows: list[tuple[str, dict]], first_column: str) -> None:
    """Print load results as a Markdown table, one row per (label, result)."""
    header = (
        f"| {first_column} | completion tokens/s | replies/s | p50 latency s | p95 latency s | p50 TTFT s "
        "| errors | peak server RSS MB |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for label, row in rows:
        print(
            f"| {label} | {row['tokens_per_s']:.1f} | {row['replies_per_s']:.2f} | {row['p50']:.2f} "
            f"| {row['p95']:.2f} | {row['ttft_p50']:.2f} | {row['errors']} | {row['peak_rss_mb']:.0f} |"
        )
        for sample in row["error_samples"]:
            print(f"  error: {sample}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16,32", help="comma-separated client counts")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--url", help="an OpenAI-compatible server to measure instead of starting Palaver")
    parser.add_argument("--pid", type=int, help="that server's process id, to read its peak memory")
    parser.add_argument("--label", default=None, help="name for the server in the table")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if args.url:
        run_load(args.url, 2, 1, 8, None)  # warm up, as for Palaver below
        rows = [run_load(args.url, c, args.turns, args.max_tokens, args.pid) for c in levels]
        label = args.label or args.url
    else:
        cache = os.environ.get("PALAVER_CACHE_DIR")
        with tempfile.TemporaryDirectory() as scratch, palaver(cache or scratch) as (url, pid):
            seconds_until_ready(url, time.perf_counter(), timeout=600)
            run_load(url, 2, 1, 8, None)  # warm up: first calls pay one-off kernel set-up
            rows = [run_load(url, c, args.turns, args.max_tokens, pid) for c in levels]
        label = args.label or "Palaver"
    print(
        f"{label} · {args.turns} turns × {args.max_tokens} tokens, greedy · "
        f"{os.cpu_count()} CPUs, {platform.machine()}\n"
    )
    print_table([(str(row["clients"]), row) for row in rows], "clients")


if __name__ == "__main__":
    main()
