"""Two tiers against one process, and a web tier in front of llama-cpp-python's server.

1. The 16-client load straight to a Palaver process, and through a model-less Palaver web process
   (PALAVER_BACKEND=openai) in front of that same process, alternating ABBA.
2. A scripted check of the page and /v1 through a web process in front of llama-cpp-python's server on the
   embedded GGUF (its venv is the one `make bench-llamacpp` builds).

Usage: .venv/bin/python -m bench.two_tier [--skip-llamacpp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import openai
import requests

from bench.engine_servers import start
from bench.load import print_table, run_load
from bench.serve import palaver, seconds_until_ready
from bench.storage import cpu_flags

FORM_JSON = {"Accept": "application/json"}


@contextmanager
def web_tier(upstream_url: str, cache_dir: str):
    """Start a model-less Palaver in front of upstream_url; yield (url, pid)."""
    with palaver(cache_dir, backend="openai", upstream_url=f"{upstream_url}/v1", temperature="0") as (url, pid):
        seconds_until_ready(url, time.perf_counter(), timeout=120)
        yield url, pid


def compare_load(cache: str, scratch: str, clients: int, turns: int, max_tokens: int) -> None:
    rows = []
    with palaver(cache) as (direct_url, direct_pid):
        seconds_until_ready(direct_url, time.perf_counter(), timeout=600)
        with web_tier(direct_url, str(Path(scratch) / "front")) as (front_url, front_pid):
            paths = [
                ("one process: clients → Palaver", direct_url, direct_pid),
                ("two tiers: clients → web process → the same Palaver", front_url, front_pid),
            ]
            for _, url, _ in paths:  # warm up at full width: the first batches of a size cost more
                run_load(url, clients, 1, 8, None)
            for round_number in range(2):  # ABBA, so drift on this shared machine hits both alike
                for label, url, pid in paths if round_number == 0 else paths[::-1]:
                    rows.append((f"{label} (round {round_number + 1})", run_load(url, clients, turns, max_tokens, pid)))
    print(f"{clients} clients × {turns} turns × {max_tokens} tokens through /v1, greedy, embedded model")
    print("(peak RSS is the process the clients talk to: the web process alone in the two-tier rows)\n")
    print_table(rows, "path")


def check(name: str, results: list[tuple[str, str]], run: Callable[[], str]) -> None:
    try:
        results.append((name, "pass: " + run()))
    except Exception as exc:  # a failed check is reported, and the others still run
        results.append((name, f"FAIL: {exc.__class__.__name__}: {str(exc)[:200]}"))


def check_llamacpp(cache: str, scratch: str) -> bool:
    """Run the page and /v1 through a web process in front of llama-cpp-python's server."""
    from palaver.engine.model_sources import embedded_gguf_path

    results: list[tuple[str, str]] = []
    with (
        start("llama-cpp-python", str(embedded_gguf_path()), cache) as (upstream, _),
        web_tier(upstream, str(Path(scratch) / "front-llamacpp")) as (url, _),
    ):
        browser = requests.Session()

        def readiness() -> str:
            ready = requests.get(f"{url}/readyz", timeout=10).json()
            assert ready["state"] == "ready", ready
            return f"serving {ready['name']!r}"

        def page_memory() -> str:
            first = browser.post(f"{url}/", data={"textbox": "My name is Ada."}, headers=FORM_JSON, timeout=60)
            second = browser.post(f"{url}/", data={"textbox": "What is my name?"}, headers=FORM_JSON, timeout=60)
            assert first.ok and second.ok, (first.text, second.text)
            one, two = first.json(), second.json()
            assert one["conversation_id"] == two["conversation_id"] and two["reply"]
            grew = two["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"]
            return (
                f"two turns in one conversation, prompt tokens {one['usage']['prompt_tokens']} → "
                + (f"{two['usage']['prompt_tokens']}" + ("" if grew else " (usage not reported)"))
                + f"; reply {two['reply'][:60]!r}"
            )

        def v1_stream() -> str:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
            model = client.models.list().data[0].id
            chunks = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Count to five."}], max_tokens=24, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text
            return f"{len(text)} characters streamed: {text[:60]!r}"

        def stop() -> str:
            stream = browser.post(
                f"{url}/",
                data={"textbox": "Tell me a long story about a lighthouse.", "max_new_tokens": "400", "stop": ""},
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=60,
            )
            events = (json.loads(line[6:]) for line in stream.iter_lines() if line.startswith(b"data:"))
            shown = next(events)["delta"]
            assert browser.post(f"{url}/stop", timeout=10).json() == {"stopped": True}
            for event in events:
                if event.get("done") or "error" in event:
                    break
                shown += event.get("delta", "")
            assert event.get("finish_reason") == "cancelled", event
            return f"stopped after {len(shown)} characters; the stored reply is what was shown"

        for name, run in [("readiness", readiness), ("page, with memory", page_memory), ("/v1 streaming", v1_stream)]:
            check(name, results, run)
        check("Stop", results, stop)
    print("\nA web process in front of llama-cpp-python's server (embedded GGUF):\n")
    print("| check | result |\n|---|---|")
    for name, result in results:
        print(f"| {name} | {result} |")
    return all(result.startswith("pass") for _, result in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, flags: {cpu_flags()}\n")
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        compare_load(cache, scratch, args.clients, 3, 32)
        if not args.skip_llamacpp and not check_llamacpp(cache, scratch):
            sys.exit(1)


if __name__ == "__main__":
    main()
