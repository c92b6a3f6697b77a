"""Palaver, llama.cpp's own llama-server and llama-cpp-python's server, side by side on the embedded GGUF.

Usage: make bench-engines                       (all three, 1, 16 and 32 clients, then two CPU hogs at 8 clients,
                                                 a 1,000-token prompt's first token, Palaver's start and its
                                                 32 clients under PALAVER_MEMORY_LIMIT=512MB)
       .venv/bin/python -m bench.engines --servers palaver,llama-server --clients 1 --hogs 0
       .venv/bin/python -m bench.engines --servers palaver,palaver-fast   (PALAVER_ARITHMETIC=fast beside exact)
       .venv/bin/python -m bench.engines --weights Q4_K_M   (the embedded model re-quantised by llama-quantize)
       .venv/bin/python -m bench.engines --model "$(.venv/bin/python -m bench.large_vocab)"   (a 262k vocabulary)
Then the fast mode's KL divergence on the file beside llama.cpp's (--kl-chunks 0 leaves it out).
Each server runs alone on the machine in turn, under the same closed-loop load (bench/load.py): every client
holds a conversation of --turns turns, greedy, --max-tokens tokens a reply. Builds the peers on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.load import peak_rss_mb, print_table, run_load
from bench.serve import palaver, percentile, seconds_until_ready
from tests.servers import procfile_server

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"
WORDS = "the quick brown fox jumps over a lazy dog while seven bright stars shine above green hills".split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_summary() -> str:
    """Name the CPU and the vector extensions that matter for these kernels."""
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni"]
    return f"{model.group(1) if model else platform.processor()}, {os.cpu_count()} CPUs, " + " ".join(
        flag for flag in wanted if flag in flags
    )


@contextmanager
def process_server(command: list[str], port: int, log_name: str, env: dict | None = None):
    """Start a server process, wait until /v1/models answers; yield (url, pid)."""
    with (Path(tempfile.gettempdir()) / log_name).open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited; see {log.name}")
                try:
                    if requests.get(url + "/v1/models", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            yield url, server.pid
        finally:
            server.terminate()
            server.wait(30)


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


@contextmanager
def start(name: str, gguf: str, cache_dir: str):
    """Start one of the servers on a GGUF file; yield (url, pid)."""
    threads = str(os.cpu_count())
    if name.startswith("palaver"):
        # palaver-fast: PALAVER_ARITHMETIC=fast; palaver-512MB: the same, with PALAVER_MEMORY_LIMIT=512MB.
        variant = name.split("-", 1)[1] if "-" in name else ""
        settings = {"arithmetic": "fast"} if variant == "fast" else {"memory_limit": variant} if variant else {}
        # Long enough for the 1,000-token prompt (the default is 2,000 characters).
        with palaver(cache_dir, gguf, max_message_chars="8000", **settings) as (url, pid):
            seconds_until_ready(url, time.perf_counter(), timeout=600)
            yield url, pid
    elif name == "llama-server":
        binary = subprocess.run(
            [str(ROOT / "bench/llama_server.sh")], check=True, capture_output=True, text=True
        ).stdout.strip()
        port = free_port()
        with process_server(
            [
                binary,
                "-m",
                gguf,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-c",
                "32768",
                "-np",
                "32",
                "-cb",
                "-t",
                threads,
            ],
            port,
            "llama-server.log",
        ) as server:
            yield server
    elif name == "llama-cpp-python":
        venv = ROOT / os.environ.get("LLAMACPP_VENV", ".bench-llamacpp-venv")
        if subprocess.run([str(venv / "bin/python"), "-c", "import llama_cpp.server"], capture_output=True).returncode:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin/pip"), "install", "--quiet", "llama-cpp-python[server]==0.3.36"], check=True
            )
        port = free_port()
        # It reads PORT and HOST from the environment over its flags; --interrupt_requests False queues requests
        # instead of letting each new one cut off the one streaming.
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")}
        with process_server(
            [
                str(venv / "bin/python"),
                "-m",
                "llama_cpp.server",
                "--model",
                gguf,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                threads,
                "--interrupt_requests",
                "False",
            ],
            port,
            "llama-cpp-python.log",
            env,
        ) as server:
            yield server
    else:
        raise SystemExit(f"unknown server {name!r}")


@contextmanager
def cpu_hogs(count: int):
    """Run count busy-loop processes, the noisy neighbours of a shared host."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


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
    parser.add_argument("--weights", default="", help="a llama-quantize type (Q4_K_M...) to re-quantise the model to")
    parser.add_argument("--model", default="", help="a GGUF file instead of the embedded one (bench.large_vocab's)")
    parser.add_argument("--kl-chunks", type=int, default=40, help="512-token chunks for the KL table (0: none)")
    args = parser.parse_args()
    import palaver.engine.model_sources as sources

    gguf = args.model or str(sources.embedded_gguf_path())
    if args.weights:
        quantise = [str(ROOT / "bench/llama_quantize.sh"), args.weights]
        gguf = subprocess.run(quantise, check=True, capture_output=True, text=True).stdout.strip()
    levels = [int(c) for c in args.clients.split(",") if c]
    rows, first_tokens, starts = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        if "palaver" in args.servers.split(","):
            with tempfile.TemporaryDirectory() as empty:
                starts = [palaver_start_seconds(empty), palaver_start_seconds(empty)]  # empty cache, then warm
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
    print(f"\n{Path(gguf).name} · {args.turns} turns × {args.max_tokens} tokens a reply, greedy · {cpu_summary()}\n")
    print_table([(f"{name} | {clients}", row) for name, clients, row in rows], "server | clients")
    if first_tokens:
        print("\n| server | prompt tokens | time to first token, one client (median of 3) |\n|---|---|---|")
        for name, seconds, tokens, _ in first_tokens:
            print(f"| {name} | {tokens} | {seconds:.3f} s |")
    if starts:
        print(
            f"\nPalaver ready (PALAVER_PRELOAD=1, from process start): {starts[0]:.1f} s with an empty cache, "
            f"{starts[1]:.1f} s warm"
        )
    if args.kl_chunks:  # the fast mode's price in agreement, beside llama.cpp's, on the same file (bench.kl_divergence)
        from bench.kl_divergence import divergence_row, print_markdown

        print("\nKL divergence from the file's float32 model (bench/kl_divergence.py):\n")
        print_markdown([divergence_row(Path(gguf).name, Path(gguf), args.kl_chunks, 512)])


if __name__ == "__main__":
    main()
