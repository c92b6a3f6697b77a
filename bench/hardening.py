"""Replay issue 20's attacks on a real server and print what each one costs another user.

Usage: make bench-hardening                      (every probe, the embedded model from the Procfile)
       make bench-hardening BENCH_ARGS="--only fixation,streams"

Each probe starts its own server. "Another user" connects from 127.0.0.2, the attacker from 127.0.0.1, so the
server sees two addresses, as it would on the internet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter

from tests.servers import Server, procfile_server

ATTACKER, VICTIM = "127.0.0.1", "127.0.0.2"
ROOT = Path(__file__).resolve().parent.parent


class SourceAddress(HTTPAdapter):
    """Send a session's requests from one local address."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(pool_maxsize=64)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address: str) -> requests.Session:
    """Return a session whose requests come from address."""
    session = requests.Session()
    session.mount("http://", SourceAddress(address))
    return session


@contextmanager
def server(cache_dir: str, **settings: str) -> Iterator[Server]:
    env = {"PALAVER_CACHE_DIR": cache_dir, "PALAVER_PRELOAD": "1", "PALAVER_TEMPERATURE": "0", "HF_HUB_OFFLINE": "1"}
    env.update({f"PALAVER_{name.upper()}": value for name, value in settings.items()})
    with procfile_server(env, wait_for="/readyz", timeout=180) as running:
        yield running


def commit() -> str:
    """Return the checkout's short commit id, for the report's header."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def timed(call: Callable[[], requests.Response]) -> tuple[float, int, int]:
    """Return (seconds, status, body bytes) of one request; a timeout reads as status 0."""
    started = time.perf_counter()
    try:
        response = call()
        return time.perf_counter() - started, response.status_code, len(response.content)
    except requests.RequestException:
        return time.perf_counter() - started, 0, 0


def victim_reply(base: str, timeout: float = 60) -> tuple[float, int, int]:
    """Time another user's 8-token reply through /api/chat."""
    body = {"message": "Say hello.", "max_new_tokens": 8, "temperature": 0}
    return timed(lambda: client(VICTIM).post(base + "/api/chat", json=body, timeout=timeout))


REPLY_MARKDOWN = (
    "Bees are **social insects** that live in colonies; a hive can hold *tens of thousands* of workers. "
    "They turn nectar into honey by evaporation and enzymes, and store it in wax cells.\n\n"
    "- Workers gather nectar and pollen\n- Drones mate with the queen\n- The queen lays the eggs\n\n"
    "| part | job |\n|---|---|\n| wings | flight |\n| antennae | smell |\n\n"
    "```python\nhive = {'queen': 1, 'workers': 30000}\nprint(sum(hive.values()))\n```\n\n"
    "See [the bee page](https://en.wikipedia.org/wiki/Bee) for more, and ask me about `pollination`."
)


def seed_turns(database: Path, conversation_id: str, turns: int) -> None:
    """Write ordinary turns (a question, a Markdown reply) straight into the SQLite database, after the stored ones."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT turns FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        rows = []
        for turn in range(stored, stored + turns):
            question = f"Question {turn}: tell me more about bees, how they make honey, and why they dance?"
            answer = f"Answer {turn}. " + REPLY_MARKDOWN
            rows.append((conversation_id, 2 * turn, "user", question, 20, None, None, now, None))
            rows.append((conversation_id, 2 * turn + 1, "assistant", answer, None, 64, "stop", now, 1.5))
        db.executemany(
            "INSERT INTO messages (conversation_id, position, role, content, prompt_tokens, completion_tokens, "
            "finish_reason, created_at, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute("UPDATE conversations SET turns = ? WHERE id = ?", (stored + turns, conversation_id))


def page_conversation(base: str, session: requests.Session) -> str:
    """Start a conversation on the page as a browser does; return its id."""
    session.get(base + "/", timeout=30)
    answer = session.post(base + "/", data={"textbox": "Hello", "max_new_tokens": "1"}, timeout=60)
    answer.raise_for_status()
    return session.get(base + "/api/conversations", timeout=30).json()["conversations"][0]["conversation_id"]


def probe_fixation(cache: str) -> list[tuple[str, str]]:
    with server(cache) as running:
        base = running.url
        attacker = client(ATTACKER)
        planted = attacker.post(base + "/api/chat", json={"message": "Welcome", "max_new_tokens": 1}, timeout=60)
        conversation_id = planted.json()["conversation_id"]
        visitor = client(VICTIM)
        opened = visitor.get(f"{base}/c/{conversation_id}", timeout=30).status_code
        home_shows_it = "Welcome" in visitor.get(base + "/", timeout=30).text
        visitor.post(base + "/", data={"textbox": "my password is hunter2", "max_new_tokens": "1"}, timeout=60)
        read = attacker.get(f"{base}/api/conversations/{conversation_id}", timeout=30).json()
        leaked = any("hunter2" in m["content"] for m in read.get("messages", []))
    return [
        ("1. fixation: the visitor's GET /c/<attacker's id>", str(opened)),
        ("1. fixation: the visitor's / shows the attacker's conversation", "yes" if home_shows_it else "no"),
        ("1. fixation: the attacker reads the visitor's message", "yes" if leaked else "no"),
    ]


def probe_long_page(cache: str) -> list[tuple[str, str]]:
    rows = []
    with server(cache) as running:
        base = running.url
        owner = client(ATTACKER)
        conversation_id = page_conversation(base, owner)
        seed_turns(Path(cache) / "palaver.db", conversation_id, 1999)
        loads = [timed(lambda: owner.get(f"{base}/c/{conversation_id}", timeout=120)) for _ in range(3)]
        rows.append(("2. 2,000-turn page: load, median s", f"{statistics.median(s for s, _, _ in loads):.2f}"))
        rows.append(("2. 2,000-turn page: size, KB", f"{loads[0][2] / 1024:.0f}"))
        stop = threading.Event()

        def load_loop() -> None:
            while not stop.is_set():
                timed(lambda: owner.get(f"{base}/c/{conversation_id}", timeout=120))

        threads = [threading.Thread(target=load_loop) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        replies = [victim_reply(base) for _ in range(3)]
        stop.set()
        for thread in threads:
            thread.join()
        rows.append(("2. another user's 8-token reply during 8 loads of it, max s", worst(replies)))
        turn = timed(
            lambda: owner.post(
                f"{base}/c/{conversation_id}",
                data={"textbox": "one more", "max_new_tokens": "1"},
                headers={"Accept": "application/json"},
                timeout=120,
            )
        )
        rows.append(("6. the next turn of the 2,000-turn conversation, s", f"{turn[0]:.2f} ({turn[1]})"))
    return rows


def worst(results: list[tuple[float, int, int]]) -> str:
    statuses = sorted({status for _, status, _ in results})
    return f"{max(s for s, _, _ in results):.2f} ({', '.join(str(s) for s in statuses)})"


def probe_streams(cache: str) -> list[tuple[str, str]]:
    rows = []
    with server(cache) as running:
        base = running.url
        stop = threading.Event()
        statuses: list[int] = []
        body = {
            "model": "SmolLM2-135M-Instruct",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": "Write a very long story."}],
        }

        def long_stream() -> None:
            session = client(ATTACKER)
            while not stop.is_set():
                try:
                    with session.post(base + "/v1/chat/completions", json=body, stream=True, timeout=120) as answer:
                        statuses.append(answer.status_code)
                        if answer.status_code != 200:
                            time.sleep(0.5)
                            continue
                        for _ in answer.iter_lines():
                            if stop.is_set():
                                break
                except requests.RequestException:
                    statuses.append(0)

        threads = [threading.Thread(target=long_stream) for _ in range(64)]
        for thread in threads:
            thread.start()
        time.sleep(5)
        other = client(VICTIM)
        health = [timed(lambda: other.get(base + "/healthz", timeout=20)) for _ in range(5)]
        rows.append(("3. another client's /healthz during 64 streams, max s", worst(health)))
        chat = timed(lambda: other.post(base + "/api/chat", json={"message": "Hi", "max_new_tokens": 8}, timeout=60))
        rows.append(("3. another client's 8-token /api/chat during 64 streams, s", f"{chat[0]:.2f} ({chat[1]})"))
        stop.set()
        for thread in threads:
            thread.join()
        refused = sum(1 for status in statuses if status == 429)
        rows.append(("3. the attacker's streams answered 200 / 429", f"{statuses.count(200)} / {refused}"))
    with server(cache, token_rate_limit="300/minute", api_keys="k1") as running:
        headers = {"Authorization": "Bearer k1"}
        body = {"message": "Write a long story.", "max_new_tokens": 128}
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(running.url + "/api/chat", json=body, headers=headers, timeout=120),
                    range(16),
                )
            )
        granted = sum(1 for answer in answers if answer.status_code == 200)
        rows.append(("3. 16 requests of 128 tokens under 300 tokens a minute: granted", str(granted)))
    with server(cache, rate_limit="20/minute") as running:
        polled = [client(ATTACKER).get(running.url + "/readyz", timeout=10).status_code for _ in range(30)]
        rows.append(("3. /readyz polled 30 times under 20 requests a minute: 429s", str(polled.count(429))))
    return rows


def probe_request_threads(cache: str) -> list[tuple[str, str]]:
    rows = []
    with server(cache) as running:
        base = running.url
        rows.append(("4. another user's 8-token reply, quiet, s", f"{victim_reply(base)[0]:.2f}"))
        owners = [client(ATTACKER) for _ in range(16)]
        pages = [page_conversation(base, owner) for owner in owners]
        database = Path(cache) / "palaver.db"
        for conversation_id in pages:
            seed_turns(database, conversation_id, 199)
        bad_stop = {"message": "x", "stop": ["s"] * 6000}
        loads: dict[str, Callable[[int], Callable[[], requests.Response]]] = {
            "its own 200-turn /c/<id>": lambda i: lambda: owners[i].get(f"{base}/c/{pages[i]}", timeout=120),
            "a 400 (a 6,000-item stop)": lambda i: lambda: owners[i].post(
                base + "/api/chat", data=json.dumps(bad_stop), timeout=120
            ),
            "GET /": lambda i: lambda: owners[i].get(base + "/", timeout=120),
        }
        for label, make in loads.items():
            stop = threading.Event()

            def loop(call: Callable[[], requests.Response], stop: threading.Event) -> None:
                while not stop.is_set():
                    timed(call)

            threads = [threading.Thread(target=loop, args=(make(i), stop)) for i in range(16)]
            for thread in threads:
                thread.start()
            time.sleep(2)
            replies = [victim_reply(base, timeout=90) for _ in range(2)]
            stop.set()
            for thread in threads:
                thread.join()
            rows.append((f"4. another user's 8-token reply, 16 clients looping {label}, max s", worst(replies)))
    return rows


def probe_eviction(cache: str) -> list[tuple[str, str]]:
    with server(cache, max_conversations="30") as running:
        base = running.url
        user = client(VICTIM)
        conversation_id = page_conversation(base, user)
        attacker = client(ATTACKER)
        for _ in range(60):
            attacker.post(base + "/api/chat", json={"message": "x", "max_new_tokens": 1}, timeout=60)
        time.sleep(65)  # the retention sweep runs every 60 s
        kept = user.get(f"{base}/api/conversations/{conversation_id}", timeout=30).status_code
    return [("5. a user's conversation after 60 anonymous ones, cap 30, one sweep", str(kept))]


def probe_history_cliff(cache: str) -> list[tuple[str, str]]:
    with server(cache) as running:
        base = running.url
        session = client(VICTIM)
        conversation_id, times = None, []
        for turn in range(30):
            body = {
                "message": f"Turn {turn}: " + "tell me about bees and honey and flowers " * 4,
                "max_new_tokens": 1,
                "conversation_id": conversation_id,
            }
            started = time.perf_counter()
            answer = session.post(base + "/api/chat", json=body, timeout=120).json()
            times.append(time.perf_counter() - started)
            conversation_id = answer["conversation_id"]
        counts = session.get(base + "/readyz", timeout=10).json()["requests"]
    before, after = times[10:19], times[21:30]
    return [
        ("6. 1-token turn, turns 11-19 (under the history limit), median s", f"{statistics.median(before):.2f}"),
        ("6. 1-token turn, turns 22-30 (past it), median s", f"{statistics.median(after):.2f}"),
        (
            "6. prompt tokens reused from the prefix cache, of all",
            f"{counts.get('reused_prompt_tokens', 0)} / "
            f"{counts.get('reused_prompt_tokens', 0) + counts.get('prefilled_tokens', 0)}",
        ),
    ]


def probe_idle_sockets(cache: str) -> list[tuple[str, str]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    with server(cache) as running:
        url = urlparse(running.url)
        stop = threading.Event()

        def hold_sockets() -> None:
            """Keep 2,500 connections open from one address, reopening each one the server closes."""
            selector = selectors.DefaultSelector()

            def open_one() -> None:
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((ATTACKER, 0))
                with suppress(BlockingIOError, OSError):
                    sock.connect((url.hostname, url.port))
                selector.register(sock, selectors.EVENT_READ)

            for _ in range(2500):
                open_one()
            while not stop.is_set():
                for key, _ in selector.select(0.2):  # readable: the server answered or closed it
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
                    open_one()
            for key in list(selector.get_map().values()):
                key.fileobj.close()

        holder = threading.Thread(target=hold_sockets)
        holder.start()
        time.sleep(3)
        visitor = client(VICTIM)
        loads = []
        for _ in range(10):
            loads.append(timed(lambda: visitor.get(running.url + "/", timeout=60)))
            time.sleep(0.5)
        reply = victim_reply(running.url)
        stop.set()
        holder.join()
    return [
        ("7. the page during 2,500 idle sockets from one address, median s", worst_median(loads)),
        ("7. the page during them, max s", worst(loads)),
        ("7. a chat reply during them, s", f"{reply[0]:.2f} ({reply[1]})"),
    ]


def worst_median(results: list[tuple[float, int, int]]) -> str:
    statuses = sorted({status for _, status, _ in results})
    return f"{statistics.median(s for s, _, _ in results):.2f} ({', '.join(str(s) for s in statuses)})"


def raw(base: str, data: bytes, source: str = VICTIM) -> bytes:
    """Send bytes as given from source and return everything the server answers before it closes or pauses."""
    url = urlparse(base)
    with socket.create_connection((url.hostname, url.port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


def probe_small_defects(cache: str) -> list[tuple[str, str]]:
    rows = []
    with server(cache, max_body_bytes="1024") as running:
        base, host = running.url, urlparse(running.url).netloc
        big = b"textbox=" + b"x" * 4000
        head = (
            f"POST / HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nConnection: close\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(big)}\r\n\r\n"
        ).encode()
        answer = raw(base, head + big)
        rows.append(("8. cross-site page POST over the body limit: status", answer.split(b" ", 2)[1].decode()))
        for label, data in [
            ("gunicorn's 400", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
            ("gunicorn's 414", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("the poller's 431", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
        ]:
            answer = raw(base, data)
            status = answer.split(b" ", 2)[1].decode() if answer else "none"
            has = b"x-content-type-options: nosniff" in answer.lower()
            rows.append((f"8. {label}: status, security headers", f"{status}, {'yes' if has else 'no'}"))
        origin = f"https://{host}"
        answer = requests.post(base + "/new", headers={"Origin": origin}, allow_redirects=False, timeout=10)
        rows.append(("8. POST with Origin https://<host> to an http server", str(answer.status_code)))
        answer = raw(base, b"GET /api/schema HTTP/1.1\r\nConnection: close\r\n\r\n")
        rows.append(("8. HTTP/1.1 without Host", answer.split(b" ", 2)[1].decode() if answer else "none"))
        continues = [expect_continue(base, host, body_bytes) for body_bytes in (40, 4000)]
        rows.append(("8. 100 Continue lines for one request that waits for it", str(continues[0])))
        rows.append(("8. 100 Continue lines before a 413", str(continues[1])))
        session = client(VICTIM)
        session.get(base + "/", timeout=10)
        session.post(base + "/", data={"textbox": "Mon école", "max_new_tokens": "1"}, timeout=60)
        found = session.get(base + "/api/conversations", params={"q": "ÉCOLE"}, timeout=10).json()
        rows.append(("8. search 'ÉCOLE' finds 'école' on SQLite", "yes" if found["conversations"] else "no"))
        rows.append(("8. tracebacks in the server's log", str(running.log().count("Traceback"))))
    return rows


def expect_continue(base: str, host: str, length: int) -> int:
    """Send a head with Expect: 100-continue, wait for the 100 as a client does, then the body; count the 100s."""
    url = urlparse(base)
    body = json.dumps({"message": "x" * max(1, length - 20), "max_new_tokens": 1}).encode()
    with socket.create_connection((url.hostname, url.port), timeout=5, source_address=(VICTIM, 0)) as sock:
        sock.sendall(
            f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        sock.settimeout(1)
        answer = b""
        with suppress(TimeoutError):
            answer = sock.recv(65536)
        sock.settimeout(5)
        try:
            sock.sendall(body)
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer.count(b"100 Continue")


PROBES = {
    "fixation": probe_fixation,
    "long-page": probe_long_page,
    "streams": probe_streams,
    "threads": probe_request_threads,
    "eviction": probe_eviction,
    "history": probe_history_cliff,
    "sockets": probe_idle_sockets,
    "defects": probe_small_defects,
}


Probe = Callable[[str], list[tuple[str, str]]]
CPU_FLAGS = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni"}


def run_probes(probes: dict[str, Probe], description: str) -> None:
    """Run the probes the command line names, each with a scratch directory; print their rows, then a table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", default=",".join(probes), help="comma-separated probes: " + ", ".join(probes))
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"palaver-probe-{name}-", ignore_cleanup_errors=True) as cache:
            started = time.perf_counter()
            found = probes[name](cache)
            print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)
            for row in found:
                print(f"  {row[0]}: {row[1]}", flush=True)
            rows += found
    flags = set(Path("/proc/cpuinfo").read_text().split()) & {
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
    }
    print(f"\nMachine: {os.cpu_count()} CPUs ({' '.join(sorted(flags))}), Python {platform.python_version()}")
    print(f"Commit: {commit()}  run {uuid.uuid4().hex[:6]}\n")
    print("| probe | result |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


def main() -> None:
    run_probes(PROBES, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
