"""Measure Palaver served from its Procfile: cold and cached start, reply latency, resident memory.

Usage: make bench   (or: .venv/bin/python -m bench.serve --replies 20 --max-tokens 32 --streams 8)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.servers import procfile_server

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = [
    "Hi there! Who are you?",
    "Tell me about the sea.",
    "What should I cook tonight?",
    "Give me a tip for learning Python.",
]


@contextmanager
def palaver(cache_dir: str, model: str = "", **settings: str):
    """Start the Procfile's web command with the model preloading; yield (base URL, master pid)."""
    env = {"PALAVER_CACHE_DIR": cache_dir, "PALAVER_MODEL": model, "PALAVER_PRELOAD": "1", "HF_HUB_OFFLINE": "1"}
    env["PALAVER_CLIENT_SHARE"] = "0"  # the benchmark plays many clients from one address
    env.update({f"PALAVER_{name.upper()}": value for name, value in settings.items()})
    with procfile_server(env) as server:
        yield server.url, server.pid


def percentile(values, fraction: float) -> float:
    """Return the nearest-rank percentile: the smallest value with at least fraction of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def seconds_until_ready(base_url: str, started: float, timeout: float = 300) -> float:
    """Poll /readyz until the model is loaded; return seconds since started."""
    while time.perf_counter() - started < timeout:
        try:
            if requests.get(base_url + "/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except requests.RequestException:  # not listening yet, or too busy loading to answer
            pass
        time.sleep(0.05)
    raise SystemExit("the server did not become ready")


def worker_memory_mb(master_pid: int) -> tuple[float, float]:
    """Return the gunicorn worker's current and peak resident memory, in MB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def reply_latencies(base_url: str, replies: int, max_tokens: int) -> list[tuple[float, int]]:
    """Send replies one at a time in four-turn conversations; return (seconds, tokens) per reply."""
    results = []
    conversation_id = None
    for n in range(replies):
        if n % len(PROMPTS) == 0:
            conversation_id = None
        body = {
            "message": PROMPTS[n % len(PROMPTS)],
            "conversation_id": conversation_id,
            "max_new_tokens": max_tokens,
            "temperature": 0,
        }
        started = time.perf_counter()
        response = requests.post(base_url + "/api/chat", json=body, timeout=120)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        data = response.json()
        conversation_id = data["conversation_id"]
        results.append((elapsed, data["usage"]["completion_tokens"]))
    return results


def streamed_replies(base_url: str, count: int, max_tokens: int) -> list[tuple[float, float, int]]:
    """Stream replies through /v1/chat/completions; return (time to first token, total seconds, tokens)."""
    results = []
    model = requests.get(base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
    for n in range(count):
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}],
        }
        started = time.perf_counter()
        first, tokens = None, 0
        with requests.post(base_url + "/v1/chat/completions", json=body, stream=True, timeout=120) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[len(b"data: ") :])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        results.append((first, time.perf_counter() - started, tokens))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default="", help="PALAVER_MODEL to serve (default: the embedded model)")
    parser.add_argument("--streams", type=int, default=8, help="streamed replies to time")
    parser.add_argument("--stream-tokens", type=int, default=64, help="max_tokens of each streamed reply")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for label in ("cold start (empty cache)", "cached start"):
            started = time.perf_counter()
            with palaver(cache_dir, args.model) as (base_url, pid):
                rows.append((label + ": process start to ready, s", f"{seconds_until_ready(base_url, started):.1f}"))
                load = requests.get(base_url + "/readyz", timeout=5).json()["load_seconds"]
                rows.append((label + ": model load inside the engine, s", f"{load:.1f}"))
                if label == "cached start":
                    rss_loaded, _ = worker_memory_mb(pid)
                    measured = reply_latencies(base_url, args.replies, args.max_tokens)
                    rss, peak = worker_memory_mb(pid)
                    streamed = streamed_replies(base_url, args.streams, args.stream_tokens)
    latencies = [seconds for seconds, _ in measured]
    rates = [(tokens - 1) / (total - first) for first, total, tokens in streamed if tokens > 1]
    tokens = [count for _, count in measured]
    full = [seconds for seconds, count in measured if count == args.max_tokens]
    rows += [
        (f"replies measured (max {args.max_tokens} tokens, greedy)", f"{len(measured)}"),
        ("mean completion tokens per reply", f"{statistics.mean(tokens):.1f}"),
        ("latency p50, s", f"{statistics.median(latencies):.2f}"),
        ("latency p95, s", f"{percentile(latencies, 0.95):.2f}"),
        (
            f"latency of full {args.max_tokens}-token replies, median s ({len(full)} replies)",
            f"{statistics.median(full):.2f}" if full else "n/a",
        ),
        ("single-client tokens/s", f"{sum(tokens) / sum(latencies):.1f}"),
        ("worker RSS after load, MB", f"{rss_loaded:.0f}"),
        (f"worker RSS after {len(measured)} replies, MB", f"{rss:.0f}"),
        ("worker peak RSS, MB", f"{peak:.0f}"),
        (f"streamed replies measured (max {args.stream_tokens} tokens, greedy, /v1 with stream)", f"{len(streamed)}"),
        ("time to first token, p50 s", f"{statistics.median(first for first, _, _ in streamed):.3f}"),
        ("streaming rate after the first token, p50 tokens/s", f"{statistics.median(rates):.1f}"),
    ]
    print(f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}\n")
    print("| measure | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
