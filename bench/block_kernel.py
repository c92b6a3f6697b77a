"""The block kernel alone: weights read per second for each block type, one thread, one input row (decoding).

Usage: make bench-kernel
Random valid blocks of the embedded model's shapes (576 inputs for the 32-weight types, 1,536 for the K-quants,
whose rows are whole super-blocks), read through palaver::gguf_linear, every type in the same run.
"""

from __future__ import annotations

import time

import gguf
import numpy as np
import torch

from bench.engines import cpu_summary
from palaver.engine.gguf.file import KERNEL_TYPES, SUPER_BLOCK_TYPES, TYPE_LAYOUT, TYPE_NAMES
from palaver.engine.torch.quantized import kernel_available

REPEATS = 300


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


def main() -> None:
    assert kernel_available(), "make builds the kernel"
    torch.ops.palaver.set_threads(1)
    print(f"\n{cpu_summary()} · one thread, one input row, median of {REPEATS}\n")
    print("| type | rows × inputs | µs a call | G weights/s |\n|---|---|---|---|")
    for qtype in sorted(KERNEL_TYPES):
        rows, cols = (576, 1536) if qtype in SUPER_BLOCK_TYPES else (1536, 576)
        blocks, x = random_rows(qtype, rows, cols), torch.randn(1, cols)
        for _ in range(20):
            torch.ops.palaver.gguf_linear(x, blocks, qtype, cols)
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            torch.ops.palaver.gguf_linear(x, blocks, qtype, cols)
            times.append(time.perf_counter() - started)
        seconds = float(np.median(times))
        print(f"| {TYPE_NAMES[qtype]} | {rows} × {cols} | {seconds * 1e6:.0f} | {rows * cols / seconds / 1e9:.1f} |")


if __name__ == "__main__":
    main()
