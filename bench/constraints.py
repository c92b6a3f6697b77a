"""What holding replies to a JSON schema costs: the same load with and without response_format, side by side.

Usage: make bench-constraints          (the embedded model from the Procfile; 1 and 16 clients)
Each level runs without a schema, then with one, then without again, and the table shows each run, so the
machine's drift between runs is visible next to the difference; first on a server with PALAVER_JUMP_FORWARD=false
(every token a step), then on one with jump-forward (the default). The last column is the prompt tokens each reply
computed: what the prefix cache did not hold of the conversation so far.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import requests

from bench.engines import cpu_summary
from bench.load import converse, run_load
from bench.serve import palaver, seconds_until_ready

# An answer in a string too long to finish: every reply runs to max_tokens inside the grammar, so both runs
# generate as many tokens and the difference is the constraint's cost alone.
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1000}},
    "required": ["answer"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    constrained = functools.partial(converse, extra={"response_format": RESPONSE_FORMAT})
    rows = []
    for jump_forward in ("false", "true"):
        with tempfile.TemporaryDirectory() as cache, palaver(cache, jump_forward=jump_forward) as (url, pid):
            seconds_until_ready(url, time.perf_counter(), timeout=600)
            run_load(url, 2, 1, 8, None)
            run_load(url, 2, 1, 8, None, client=constrained)  # builds the vocabulary's grammar view once
            for clients in [int(c) for c in args.clients.split(",")]:
                for label, client in (("free text", converse), ("JSON schema", constrained), ("free text", converse)):
                    before = prefilled(url)
                    row = run_load(url, clients, args.turns, args.max_tokens, pid, client=client)
                    computed = (prefilled(url) - before) / (clients * args.turns)
                    rows.append((f"{clients} | {label} | {jump_forward}", row, computed))
    print(f"\n{args.turns} turns × {args.max_tokens} tokens, greedy · {cpu_summary()}\n")
    print(
        "| clients | response format | jump-forward | completion tokens/s | p50 latency s | p95 latency s "
        "| prompt tokens computed a reply |"
    )
    print("|---" * 7 + "|")
    for label, row, computed in rows:
        print(f"| {label} | {row['tokens_per_s']:.1f} | {row['p50']:.2f} | {row['p95']:.2f} | {computed:.0f} |")


def prefilled(url: str) -> int:
    """Return the prompt tokens the server has computed so far (those its prefix cache did not hold)."""
    return int(requests.get(url + "/readyz", timeout=30).json()["requests"].get("prefilled_tokens", 0))


if __name__ == "__main__":
    main()
