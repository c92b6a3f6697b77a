"""Soak a real server with mixed, partly hostile load for minutes; report statuses, 5xx, pending work and memory.

Usage: make bench-soak                          (10 minutes, the embedded model from the Procfile)
       make bench-soak BENCH_ARGS="--minutes 2"

The load, all at once: page visitors posting the form, page streams stopped with Stop, JSON API conversations
(some cancelled mid-reply), /v1 streams (some dropped mid-stream), bad inputs of every kind, and sockets that
send their headers one byte at a time. It exits non-zero if any 5xx was seen, if work is still pending at the
end, or if the worker's memory grew more than 10% after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import requests

from bench.serve import worker_memory_mb
from tests.servers import procfile_server

TOPICS = ["the sea", "bees", "a red bicycle", "Python", "the moon", "bread", "a lost cat", "rain"]
BAD_BODIES = [
    ("/api/chat", "application/json", b'{"message": "hi", "temperature": NaN}'),
    ("/api/chat", "application/json", b'{"message": "\\ud800"}'),
    ("/api/chat", "application/json", b'{"message": '),
    ("/api/chat", "application/json", json.dumps({"message": "word " * 1000}).encode()),
    ("/api/chat", "application/json", json.dumps({"message": "x" * 100000}).encode()),
    ("/v1/chat/completions", "application/json", json.dumps({"model": "nope", "messages": []}).encode()),
    ("/v1/chat/completions", "text/plain", b'{"model": "x", "messages": [{"role": "user", "content": "hi"}]}'),
    (
        "/v1/chat/completions",
        "application/json",
        json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "w"}] * 1400}).encode(),
    ),
    ("/invocations", "application/json", b'{"inputs": ["x"], "params": {"top_p": Infinity}}'),
    ("/", "application/x-www-form-urlencoded", b"textbox=hi&temperature=nan"),
]


class Tally:
    """Count answers by surface and status, from every thread."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.lock = threading.Lock()

    def add(self, kind: str, status: int | str) -> None:
        with self.lock:
            self.counts[(kind, status)] += 1


def page_visitor(url: str, stop: threading.Event, tally: Tally) -> None:
    """Load the page and post the form, as a browser without JavaScript does."""
    session = requests.Session()
    while not stop.is_set():
        tally.add("page GET", session.get(url + "/", timeout=120).status_code)
        response = session.post(
            url + "/", data={"textbox": f"Tell me about {random.choice(TOPICS)}", "max_new_tokens": "16"}, timeout=120
        )
        tally.add("page POST", response.status_code)
        if random.random() < 0.2:
            tally.add("page new", session.post(url + "/new", timeout=30, allow_redirects=False).status_code)


def page_streamer(url: str, stop: threading.Event, tally: Tally) -> None:
    """Stream a reply into the page and press Stop after a few deltas."""
    session = requests.Session()
    while not stop.is_set():
        with session.post(
            url + "/",
            data={"textbox": "Tell me a long story", "max_new_tokens": "200"},
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=120,
        ) as response:
            deltas, done = 0, False
            for line in response.iter_lines(delimiter=b"\n"):  # SSE lines end at LF; text may hold U+2028
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    done = done or event.get("done", False)
                    if "delta" in event:
                        deltas += 1
                        if deltas == 3:  # press Stop once, mid-reply
                            tally.add("page Stop", session.post(url + "/stop", timeout=30).status_code)
            tally.add("page stream", response.status_code if done else "no done event")


def api_user(url: str, stop: threading.Event, tally: Tally) -> None:
    """Hold three-turn conversations on the JSON API; cancel one reply in five from another thread."""
    while not stop.is_set():
        conversation_id = None
        for turn in range(3):
            body = {
                "message": f"Tell me about {random.choice(TOPICS)}" if turn == 0 else "And then?",
                "max_new_tokens": 24,
                **({"conversation_id": conversation_id} if conversation_id else {}),
            }
            if conversation_id and random.random() < 0.2:
                cancel_soon(url, conversation_id, tally)
            response = requests.post(url + "/api/chat", json=body, timeout=120)
            tally.add("api chat", response.status_code)
            if response.status_code != 200:
                break
            conversation_id = response.json()["conversation_id"]


def cancel_soon(url: str, conversation_id: str, tally: Tally) -> None:
    def cancel():
        time.sleep(0.2)
        tally.add(
            "api cancel", requests.post(f"{url}/api/conversations/{conversation_id}/cancel", timeout=30).status_code
        )

    threading.Thread(target=cancel, daemon=True).start()


def openai_streamer(url: str, stop: threading.Event, tally: Tally) -> None:
    """Stream /v1 chat completions; hang up on one in three after two chunks."""
    while not stop.is_set():
        hang_up = random.random() < 0.33
        body = {
            "model": "SmolLM2-135M-Instruct",
            "stream": True,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": f"Describe {random.choice(TOPICS)}"}],
        }
        with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=120) as response:
            chunks, finished = 0, False
            for line in response.iter_lines(delimiter=b"\n"):
                chunks += line.startswith(b"data: {")
                finished = finished or line == b"data: [DONE]"
                if hang_up and chunks == 2:
                    break
        tally.add(
            "v1 stream dropped" if hang_up else "v1 stream",
            response.status_code if hang_up or finished else "no [DONE]",
        )


def bad_inputs(url: str, stop: threading.Event, tally: Tally) -> None:
    """Send malformed and hostile bodies, and a chunked body with a broken chunk size."""
    address = urlparse(url)
    while not stop.is_set():
        path, content_type, body = random.choice(BAD_BODIES)
        response = requests.post(url + path, data=body, headers={"Content-Type": content_type}, timeout=60)
        tally.add("bad input", response.status_code)
        with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                b"\r\nzz\r\n{}\r\n0\r\n\r\n"
            )
            answer = sock.recv(64)
            tally.add("bad chunking", int(answer.split(b" ")[1]) if answer else "closed")
        time.sleep(0.2)


def slow_sockets(url: str, stop: threading.Event, tally: Tally, count: int) -> None:
    """Keep count sockets open that send a request head one byte a second, reopening any the server closes."""
    address = urlparse(url)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    sockets: list[tuple[socket.socket, int]] = []
    while not stop.is_set():
        while len(sockets) < count:
            sockets.append((socket.create_connection((address.hostname, address.port), timeout=5), 0))
        kept = []
        for sock, sent in sockets:
            try:
                sock.send(head[sent : sent + 1])
                kept.append((sock, sent + 1))
            except OSError:
                tally.add("slow socket", "closed by server")
                sock.close()
        sockets = kept
        stop.wait(1)
    for sock, _ in sockets:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--model", default="", help="PALAVER_MODEL; empty means the embedded model")
    parser.add_argument("--slow-sockets", type=int, default=20)
    args = parser.parse_args()
    cache_dir = os.environ.get("PALAVER_CACHE_DIR") or tempfile.mkdtemp(prefix="palaver-soak-")
    duration = args.minutes * 60
    env = {"PALAVER_CACHE_DIR": cache_dir, "PALAVER_MODEL": args.model, "PALAVER_PRELOAD": "1", "HF_HUB_OFFLINE": "1"}
    env["PALAVER_CLIENT_SHARE"] = "0"  # its many users all come from this one address
    with procfile_server(env, wait_for="/readyz", timeout=600) as server:
        url, pid = server.url, server.pid
        requests.post(url + "/api/chat", json={"message": "warm up"}, timeout=300)
        tally, stop = Tally(), threading.Event()
        clients = [(page_visitor, 2), (page_streamer, 1), (api_user, 2), (openai_streamer, 2), (bad_inputs, 1)]
        threads = [
            threading.Thread(target=guard, args=(kind, url, stop, tally), daemon=True)
            for kind, n in clients
            for _ in range(n)
        ]
        threads.append(threading.Thread(target=slow_sockets, args=(url, stop, tally, args.slow_sockets), daemon=True))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        memory = sample_memory(pid, started, duration, stop)
        stop.set()
        for thread in threads:
            thread.join(180)
        pending = settled_pending(url)
        problems = [line for line in server.log().splitlines() if "ERROR" in line or "Traceback" in line]
    print("\n".join(["server log errors:", *problems[:40]]) if problems else "server log: no errors")
    report(tally, memory, pending, args.minutes)


def settled_pending(url: str, patience: float = 30) -> int:
    """Return the engine's pending count once it reaches zero, or whatever it is after patience seconds."""
    deadline = time.monotonic() + patience
    while True:
        described = requests.get(url + "/readyz", timeout=30).json()
        if described["pending"] == 0 or time.monotonic() > deadline:
            print("engine counts at the end:", json.dumps(described["requests"]))
            return described["pending"]
        time.sleep(0.5)


def guard(kind, url: str, stop: threading.Event, tally: Tally) -> None:
    """Run one kind of client, counting a network failure on our side instead of dying."""
    while not stop.is_set():
        try:
            kind(url, stop, tally)
        except (requests.RequestException, ValueError, OSError) as exc:
            tally.add(kind.__name__, f"client error {exc.__class__.__name__}")


def sample_memory(pid: int, started: float, duration: float, stop: threading.Event) -> dict[str, float]:
    """Read the worker's resident memory after warm-up (a tenth of the run), halfway, and at the end."""
    marks = {"after warm-up": duration * 0.1, "middle": duration * 0.5, "end": duration}
    memory = {}
    for name, at in marks.items():
        stop.wait(max(0.0, started + at - time.monotonic()))
        memory[name] = worker_memory_mb(pid)[0]
    return memory


def report(tally: Tally, memory: dict[str, float], pending: int, minutes: float) -> None:
    flags = sorted(
        {f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "fma", "avx512f", "avx512_vnni")}
    )
    print(f"\n{minutes:g}-minute soak on {platform.machine()}, {os.cpu_count()} cores, CPU flags: {' '.join(flags)}\n")
    print("| client | status | count |\n|---|---|---|")
    for (kind, status), count in sorted(tally.counts.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        print(f"| {kind} | {status} | {count} |")
    errors = sum(count for (_, status), count in tally.counts.items() if isinstance(status, int) and status >= 500)
    growth = (memory["end"] - memory["after warm-up"]) / memory["after warm-up"]
    print(
        f"\n| measure | value |\n|---|---|\n| requests | {sum(tally.counts.values())} |\n| 5xx | {errors} |\n"
        f"| engine pending at the end | {pending} |"
    )
    for name, value in memory.items():
        print(f"| worker RSS {name} | {value:.0f} MB |")
    print(f"| RSS growth after warm-up | {growth:+.1%} |")
    if errors or pending or growth > 0.10:
        raise SystemExit("soak failed: 5xx seen, work left pending, or memory grew more than 10%")


if __name__ == "__main__":
    main()
