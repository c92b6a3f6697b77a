"""What storing conversations costs: database time per turn, and 16 clients with and without stored history.

Usage: make bench-storage
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.load import converse, converse_on_page, print_table, run_load
from bench.serve import palaver, seconds_until_ready
from palaver.core.types import Reply, Usage
from palaver.storage.database import connect, upgrade
from palaver.storage.store import ConversationStore
from tests.databases import fresh_postgres_database, postgres_cluster

REPLY = Reply(
    "A reply of about the length the load below produces, thirty-two tokens or so. " * 2, Usage(60, 32), 0, "stop"
)


def storage_ms_per_turn(url: str, conversations: int = 16, turns: int = 3) -> list[float]:
    """Time what a turn asks of the database: take the lease, read the history, write the turn, give the lease back."""
    database = connect(url)
    upgrade(database)
    store = ConversationStore(database, 100000, 86400)
    times = []
    for _ in range(turns):
        for index in range(conversations):
            conversation_id, token = f"bench-{index}", uuid.uuid4().hex
            started = time.perf_counter()
            assert store.leases.acquire(conversation_id, token)
            store.get(conversation_id)
            store.add_turn(conversation_id, "default", "Tell me more.", REPLY)
            store.leases.release(conversation_id, token)
            times.append((time.perf_counter() - started) * 1000)
    database.dispose()
    return times


def cpu_flags() -> str:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    wanted = ("avx512f", "avx512_vnni", "avx2", "fma", "f16c")
    return " ".join(flag for flag in wanted if f" {flag}" in flags) or "unknown"


def main() -> None:
    clients, turns, max_tokens, rounds = 16, 3, 32, 2
    with postgres_cluster() as server_url, tempfile.TemporaryDirectory() as scratch:
        databases = {
            "SQLite": f"sqlite:///{Path(scratch) / 'bench.db'}",
            "PostgreSQL": fresh_postgres_database(server_url),
        }
        print(f"{os.cpu_count()} CPUs, {platform.machine()}, flags: {cpu_flags()}\n")
        print("| database | storage ms per turn, median | p95 |\n|---|---|---|")
        for name, url in databases.items():
            times = sorted(storage_ms_per_turn(url))
            print(f"| {name} | {statistics.median(times):.2f} | {times[int(0.95 * len(times)) - 1]:.2f} |")
        print()
        rows = []
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        for name in databases:
            served = (
                fresh_postgres_database(server_url)
                if name == "PostgreSQL"
                else f"sqlite:///{Path(scratch) / 'served.db'}"
            )
            with palaver(cache, database_url=served) as (base_url, pid):
                seconds_until_ready(base_url, time.perf_counter(), timeout=600)
                surfaces = [
                    ("/v1, history sent by the client, nothing stored", converse),
                    (f"page, history stored in {name}", converse_on_page),
                ]
                for _, client in surfaces:  # warm up at full width: the first batches of a size cost more
                    run_load(base_url, clients, 1, 8, None, client=client)
                for round_number in range(rounds):  # ABBA, so drift on this shared machine hits both alike
                    for label, client in surfaces if round_number % 2 == 0 else surfaces[::-1]:
                        row = run_load(base_url, clients, turns, max_tokens, pid, client=client)
                        rows.append((f"{label} (server on {name}, round {round_number + 1})", row))
        print(f"{clients} clients × {turns} turns × {max_tokens} tokens, greedy, embedded model\n")
        print_table(rows, "surface")


if __name__ == "__main__":
    main()
