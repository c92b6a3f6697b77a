"""The block kernel alone: weights read per second for each block type and kernel family, one thread.

Usage: make bench-kernel
Random valid blocks of the embedded model's shapes (576 inputs for the 32-weight types, 1,536 for the K-quants,
whose rows are whole super-blocks), read through palaver::gguf_linear for one input row (decoding) and for 16 (a
batch), every type with every kernel family this CPU runs (AVX2; AVX-512 where it has it), side by side in one run.
"""

from __future__ import annotations

import time

import gguf
import numpy as np
import torch

from bench.engines import cpu_summary
from palaver.engine.gguf.file import KERNEL_TYPES, SUPER_BLOCK_TYPES, TYPE_LAYOUT, TYPE_NAMES
from palaver.engine.machine import KERNEL_FAMILY_NUMBERS
from palaver.engine.torch.quantized import kernel_available

REPEATS = 60  # calls a round: the median of each round, the best of ROUNDS
ROUNDS = 5  # the families take turns, so a noisy neighbour's burst does not land on one family alone


def random_rows(qtype: int, rows: int, cols: int) -> torch.Tensor:
    """Return valid stored rows: random bytes, with small finite float16 scales where a type keeps them."""
    rng = np.random.default_rng(qtype)
    if qtype in (0, 1, 30):
        floats = rng.standard_normal(rows * cols).astype(np.float32)
        stored = {0: floats, 1: floats.astype(np.float16), 30: (floats.view(np.uint32) >> 16).astype(np.uint16)}
        return torch.from_numpy(np.ascontiguousarray(stored[qtype].view(np.uint8).reshape(rows, -1)))
    weights = rng.standard_normal((rows, cols)).astype(np.float32)
    if qtype not in SUPER_BLOCK_TYPES:
        return torch.from_numpy(gguf.quantize(weights, gguf.GGMLQuantizationType(qtype)))
    per_block, block_bytes = TYPE_LAYOUT[qtype]
    units = rows * cols // per_block
    raw = rng.integers(0, 256, (units, block_bytes), dtype=np.uint8)
    for offset in {10: (80, 82), 11: (108,), 12: (0, 2), 13: (0, 2), 14: (208,)}[qtype]:
        raw[:, offset : offset + 2] = np.full(units, 0.002, dtype=np.float16).view(np.uint8).reshape(units, 2)
    return torch.from_numpy(raw.reshape(rows, -1))


def seconds_a_call(x: torch.Tensor, blocks: torch.Tensor, qtype: int, cols: int) -> float:
    """Return the median time of one gguf_linear call over REPEATS, after a warm-up."""
    for _ in range(10):
        torch.ops.palaver.gguf_linear(x, blocks, qtype, cols)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        torch.ops.palaver.gguf_linear(x, blocks, qtype, cols)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def best_seconds(families: dict[str, int], x: torch.Tensor, blocks: torch.Tensor, qtype: int) -> dict[str, float]:
    """Return each family's best round, the families taking turns round by round."""
    best = dict.fromkeys(families, float("inf"))
    for _ in range(ROUNDS):
        for name, number in families.items():
            torch.ops.palaver.set_kernels(number)
            best[name] = min(best[name], seconds_a_call(x, blocks, qtype, x.shape[1]))
    return best


def main() -> None:
    assert kernel_available(), "make builds the kernel"
    torch.ops.palaver.set_threads(1)
    widest = torch.ops.palaver.set_kernels(0)
    families = {name: number for name, number in KERNEL_FAMILY_NUMBERS.items() if 0 < number <= widest}
    print(f"\n{cpu_summary()} · one thread, the best of {ROUNDS} rounds' medians of {REPEATS} calls\n")
    print("| type | rows × inputs | family | µs, 1 row | G weights/s, 1 row | G weights/s, 16 rows |")
    print("|---|---|---|---|---|---|")
    for qtype in sorted(KERNEL_TYPES):
        rows, cols = (576, 1536) if qtype in SUPER_BLOCK_TYPES else (1536, 576)
        blocks = random_rows(qtype, rows, cols)
        one = best_seconds(families, torch.randn(1, cols), blocks, qtype)
        batch = best_seconds(families, torch.randn(16, cols), blocks, qtype)
        for name in families:
            print(
                f"| {TYPE_NAMES[qtype]} | {rows} × {cols} | {name} | {one[name] * 1e6:.0f} "
                f"| {rows * cols / one[name] / 1e9:.1f} | {16 * rows * cols / batch[name] / 1e9:.1f} |"
            )
    torch.ops.palaver.set_kernels(0)


if __name__ == "__main__":
    main()
