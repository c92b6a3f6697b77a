"""Decode steps of the embedded model: the lean Llama step against transformers' forward, side by side.

Usage: make bench-decode   (or: .venv/bin/python -m bench.profile_decode --rounds 5)
For 1 and 16 rows, each path decodes the same greedy rows in alternating rounds; the table gives the median
step time, the block kernel's share of it (torch profiler), and how many torch ops Python calls a step.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time

import torch
from torch.profiler import ProfilerActivity, profile

from commons import Message, Settings
from palaver.engine.torch.loading import load_model

STEPS = 32


def decode(family, rows: int, decoder, around=contextlib.nullcontext) -> float:
    """Prefill rows prompts, then time STEPS decode steps, inside around(), through decoder (None: transformers)."""
    params = Settings(temperature=0, max_new_tokens=STEPS + 1).generation_defaults()
    prompts = [
        family.build_prompt([Message("user", f"Tell me about the sea, part {i}.")], STEPS + 1) for i in range(rows)
    ]
    family.model.decoder = decoder
    batch = family.start_batch()
    batch.add_many([family.new_row(prompt, params, threading.Event()) for prompt in prompts])
    with around():
        started = time.perf_counter()
        for _ in range(STEPS):
            batch.step()
    return (time.perf_counter() - started) / STEPS * 1e3


def profiled(family, rows: int, decoder) -> tuple[float, float]:
    """Return the kernel's ms per step and the torch ops called from Python per step, from one profiled run."""
    profiler = profile(activities=[ProfilerActivity.CPU])
    decode(family, rows, decoder, around=lambda: profiler)
    events = profiler.events()
    kernel = sum(e.self_cpu_time_total for e in events if e.name == "palaver::gguf_linear") / 1e3
    calls = sum(1 for e in events if e.cpu_parent is None)  # ops called by another op are not counted again
    return kernel / STEPS, calls / STEPS


def read_bandwidth_gb_s() -> float:
    """Measure how fast one thread reads memory: the best of five sums over 1 GB."""
    data = torch.ones(256 * 1024 * 1024)  # 1 GB of float32, far larger than any cache
    with torch_threads(1):
        best = min(_timed(data.sum) for _ in range(5))
    return data.numel() * data.element_size() / best / 1e9


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    family = load_model(Settings()).family
    lean = family.model.decoder
    paths = {"lean decode step": lean, "transformers forward": None}
    table = []
    for rows in (1, 16):
        times: dict[str, list[float]] = {name: [] for name in paths}
        decode(family, rows, lean)  # warm up
        for _ in range(args.rounds):
            for name, decoder in paths.items():
                times[name].append(decode(family, rows, decoder))
        for name, decoder in paths.items():
            kernel, ops = profiled(family, rows, decoder)
            step = statistics.median(times[name])
            table.append(
                {
                    "rows": rows,
                    "path": name,
                    "ms per step (median)": f"{step:.1f}",
                    "tokens/s": f"{rows * 1e3 / step:.1f}",
                    "kernel ms per step (profiled)": f"{kernel:.1f}",
                    "torch ops called per step": f"{ops:.0f}",
                }
            )
    family.model.decoder = lean
    # The tied head reads the embedding's blocks: buffers() yields a shared tensor once.
    blocks = sum(b.numel() for b in family.model.module.buffers() if b.dtype == torch.uint8)
    bandwidth = read_bandwidth_gb_s()
    print(
        f"weight blocks read per token: {blocks / 1e6:.1f} MB; one thread reads {bandwidth:.1f} GB/s, "
        f"so the floor is {blocks / bandwidth / 1e6:.1f} ms a token\n"
    )
    print("| " + " | ".join(table[0]) + " |")
    print("|---" * len(table[0]) + "|")
    for row in table:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")


if __name__ == "__main__":
    main()
