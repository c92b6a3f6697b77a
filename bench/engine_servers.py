"""The servers bench.engines runs side by side: Palaver from its Procfile, llama.cpp's llama-server and
llama-cpp-python's server, each on a GGUF file, and busy loops to play a shared host's noisy neighbours."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from bench.serve import palaver, seconds_until_ready

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
