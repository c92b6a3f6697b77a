"""Decode steps of the embedded model: the native step and the lean Llama step with each kernel family, and
transformers' forward, side by side.

Usage: make bench-decode   (or: .venv/bin/python -m bench.profile_decode --rounds 5)
For 1 and 16 rows, each path decodes the same greedy rows in alternating rounds; the table gives the median
step time, the block kernel's share of it (torch profiler), and how many torch ops Python calls a step. The native
step (the served path) and the lean step run with every kernel family this CPU runs (AVX2; AVX-512 where it has it);
the native step also in its fast arithmetic (PALAVER_ARITHMETIC=fast) with each family's integer dot products.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench.engines import cpu_summary
from commons import Message, Settings
from palaver.engine.gguf.file import read_gguf
from palaver.engine.machine import KERNEL_FAMILY_NUMBERS, available_cores
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.native.binding import NativeModel
from palaver.engine.native.loading import llama_config
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


def native_steps(models: dict[str, NativeModel], rows: int, rounds: int) -> dict[str, float]:
    """Return each family's median ms per native decode step of rows greedy rows, the families in alternate rounds."""
    times: dict[str, list[float]] = {family: [] for family in models}
    for _ in range(rounds + 1):  # the first round warms up
        for family, model in models.items():
            cache = model.new_cache(16, rows * (STEPS // 16 + 4))
            sequences = [cache.new_sequence() for _ in range(rows)]
            for sequence in sequences:
                cache.reserve(sequence, 20 + STEPS + 1)
            prompts = [[(7 * r + 3 * i) % 1000 + 1 for i in range(20)] for r in range(rows)]
            tokens = cache.step(sequences, prompts, [True] * rows).argmax(axis=1)
            started = time.perf_counter()
            for _ in range(STEPS):
                tokens = cache.step(sequences, [[int(t)] for t in tokens], [True] * rows).argmax(axis=1)
            times[family].append((time.perf_counter() - started) / STEPS * 1e3)
            cache.close()
    return {family: statistics.median(spent[1:]) for family, spent in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    family = load_model(Settings()).family
    widest = torch.ops.palaver.set_kernels(0)
    families = {name: number for name, number in KERNEL_FAMILY_NUMBERS.items() if 0 < number <= widest}
    path = embedded_gguf_path()
    gguf = read_gguf(path)
    natives = {}
    for name in families:  # each family exact, then fast (int8 activations, its integer dot products)
        for arithmetic in ("exact", "fast"):
            model = NativeModel(
                path, llama_config(gguf), gguf.tensors, available_cores(), kernels=name, arithmetic=arithmetic
            )
            natives[name if arithmetic == "exact" else f"{name}, fast ({model.dots})"] = model
    lean = family.model.decoder
    paths: dict[str, tuple[Any, int]] = {
        f"lean decode step, {name}": (lean, number) for name, number in families.items()
    }
    paths["transformers forward"] = (None, widest)
    table = []
    for rows in (1, 16):
        for name, ms in native_steps(natives, rows, args.rounds).items():
            table.append(row_of(rows, f"native step, {name}", ms, None, None))
        times: dict[str, list[float]] = {name: [] for name in paths}
        decode(family, rows, lean)  # warm up
        for _ in range(args.rounds):
            for name, (decoder, number) in paths.items():
                torch.ops.palaver.set_kernels(number)
                times[name].append(decode(family, rows, decoder))
        for name, (decoder, number) in paths.items():
            torch.ops.palaver.set_kernels(number)
            kernel, ops = profiled(family, rows, decoder)
            table.append(row_of(rows, name, statistics.median(times[name]), kernel, ops))
    torch.ops.palaver.set_kernels(0)
    family.model.decoder = lean
    for model in natives.values():
        model.close()
    # The tied head reads the embedding's blocks: buffers() yields a shared tensor once.
    blocks = sum(b.numel() for b in family.model.module.buffers() if b.dtype == torch.uint8)
    bandwidth = read_bandwidth_gb_s()
    print(f"\n{cpu_summary()}; the native step on {available_cores()} threads, the lean step's kernel on as many")
    print(
        f"weight blocks read per token: {blocks / 1e6:.1f} MB; one thread reads {bandwidth:.1f} GB/s, "
        f"so the floor is {blocks / bandwidth / 1e6:.1f} ms a token\n"
    )
    print("| " + " | ".join(table[0]) + " |")
    print("|---" * len(table[0]) + "|")
    for row in table:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")


def row_of(rows: int, path: str, step: float, kernel: float | None, ops: float | None) -> dict[str, object]:
    """Return one line of the table; the native step has no torch profile."""
    return {
        "rows": rows,
        "path": path,
        "ms per step (median)": f"{step:.2f}",
        "tokens/s": f"{rows * 1e3 / step:.1f}",
        "kernel ms per step (profiled)": "-" if kernel is None else f"{kernel:.1f}",
        "torch ops called per step": "-" if ops is None else f"{ops:.0f}",
    }


if __name__ == "__main__":
    main()
