"""Palaver, llama.cpp's own llama-server and llama-cpp-python's server, side by side on the embedded GGUF.

Usage: make bench-engines                       (all three, 1, 16 and 32 clients, then two CPU hogs at 8 clients)
       .venv/bin/python -m bench.engines --servers palaver,llama-server --clients 1 --hogs 0
Each server runs alone on the machine in turn, under the same closed-loop load (bench/load.py): every client
holds a conversation of --turns turns, greedy, --max-tokens tokens a reply. Builds the peers on first use.
"""

from __future__ import annotations

import argparse
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

from bench.load import print_table, run_load
from bench.serve import palaver, seconds_until_ready

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"


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
    log = open(Path(tempfile.gettempdir()) / log_name, "w")
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
        log.close()


@contextmanager
def start(name: str, gguf: str, cache_dir: str):
    """Start one of the three servers on the embedded GGUF; yield (url, pid)."""
    threads = str(os.cpu_count())
    if name == "palaver":
        with palaver(cache_dir) as (url, pid):
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
    args = parser.parse_args()
    import palaver.engine.sources as sources

    gguf = str(sources.embedded_gguf_path())
    levels = [int(c) for c in args.clients.split(",") if c]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        for name in args.servers.split(","):
            with start(name, gguf, cache) as (url, pid):
                run_load(url, 2, 1, 8, None)  # warm up: first calls pay one-off set-up
                for clients in levels:
                    rows.append((name, f"{clients}", run_load(url, clients, args.turns, args.max_tokens, pid)))
                if args.hogs and name != "llama-cpp-python":
                    quiet = run_load(url, args.hog_clients, args.turns, args.max_tokens, pid)
                    rows.append((name, f"{args.hog_clients}", quiet))
                    with cpu_hogs(args.hogs):
                        noisy = run_load(url, args.hog_clients, args.turns, args.max_tokens, pid)
                    rows.append((name, f"{args.hog_clients} + {args.hogs} CPU hogs", noisy))
    print(f"\n{args.turns} turns × {args.max_tokens} tokens a reply, greedy, closed loop · {cpu_summary()}\n")
    print_table([(f"{name} | {clients}", row) for name, clients, row in rows], "server | clients")


if __name__ == "__main__":
    main()
