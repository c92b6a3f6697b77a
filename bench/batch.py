"""`palaver batch` over a 200-row CSV with the embedded model: the engine's batching against one row at a time.

Usage: .venv/bin/python -m bench.batch [--rows 200] [--tokens 16]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

from bench.storage import cpu_flags
from palaver.chat.presets import Presets
from palaver.cli.jobs import BatchRun
from palaver.core.config import Settings
from palaver.engine.engine import Engine

SUBJECTS = ["the sea", "a lighthouse", "bread", "a bicycle", "autumn", "a library", "the moon", "coffee", "a train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, flags: {cpu_flags()}\n")
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.environ.get("PALAVER_CACHE_DIR") or scratch
        settings = Settings.from_env(cache_dir=cache, temperature=0.0, max_new_tokens=args.tokens)
        engine = Engine(settings)
        assert engine.wait_ready(600), engine.load_error
        source = Path(scratch) / "texts.csv"
        with source.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["id", "text"])
            writer.writeheader()
            for n in range(args.rows):
                writer.writerow({"id": n, "text": f"Write one sentence about {SUBJECTS[n % len(SUBJECTS)]} ({n})."})
        rows = []
        batched = (f"batched ({settings.max_batch_size} rows in flight)", settings.max_batch_size)
        for label, concurrency in (batched, ("one row at a time", 1)):
            target = Path(scratch) / f"out-{concurrency}.csv"
            run = BatchRun(engine, settings.generation_defaults(), Presets(settings).default, "text", concurrency)
            started = time.perf_counter()
            results = list(run.run(source, target))
            seconds = time.perf_counter() - started
            failed = sum(result.error is not None for result in results)
            rows.append((label, len(results), seconds, failed))
        print(f"{args.rows} rows, greedy, at most {args.tokens} tokens a reply, embedded model, model already loaded\n")
        print("| run | rows | seconds | rows/s | failed |\n|---|---|---|---|---|")
        for label, count, seconds, failed in rows:
            print(f"| {label} | {count} | {seconds:.1f} | {count / seconds:.2f} | {failed} |")
        print(f"\nbatched is {rows[1][2] / rows[0][2]:.1f}x faster", flush=True)
    os._exit(0)  # the engine's torch threads may abort a normal interpreter teardown; nothing is left to clean


if __name__ == "__main__":
    main()
