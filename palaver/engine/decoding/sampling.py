"""Choose each next token with one request's own parameters and random generator (numpy: no torch needed)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from palaver.core.parameters import GenerationParams


class Sampler:
    """Choose each next token with one request's own parameters and random generator."""

    def __init__(self, params: GenerationParams):
        self.params = params
        self.generator = np.random.default_rng(params.seed)  # None: fresh entropy

    def choose(self, logits: Any, seen: list[int]) -> int:
        """Apply repetition penalty, temperature, top-k and top-p in transformers' order, then pick."""
        params = self.params
        logits = np.asarray(logits, dtype=np.float32)
        penalised = params.repetition_penalty != 1.0 and bool(seen)
        if params.greedy and not penalised:
            return int(logits.argmax())
        if params.greedy:  # the penalty on the seen tokens' own logits, put back after: no vocabulary-wide copy
            index = np.fromiter(set(seen), dtype=np.int64)
            flat = logits.reshape(-1)
            if not flat.flags.writeable:
                flat = flat.copy()
            picked = flat[index]
            try:
                flat[index] = penalise(picked, params.repetition_penalty)
                return int(flat.argmax())
            finally:
                flat[index] = picked
        # The vocabulary-wide steps work in this thread's scratch, in place: a 262,144-token vocabulary's megabyte
        # a temporary, mapped and faulted in afresh for every token, cost more than the arithmetic.
        scores = scratch("scores", logits.size)
        np.copyto(scores, logits)  # the caller's logits stay as they were
        if penalised:
            index = np.fromiter(set(seen), dtype=np.int64)
            scores[index] = penalise(scores[index], params.repetition_penalty)
        np.divide(scores, np.float32(params.temperature), out=scores)
        if 0 < params.top_k < scores.size:
            # The k best, without sorting the whole vocabulary; ties at the k-th score stay in, as with torch.topk.
            ordered = scratch("partition", scores.size)
            np.copyto(ordered, scores)
            ordered.partition(scores.size - params.top_k)
            candidates = np.flatnonzero(scores >= ordered[scores.size - params.top_k])
        else:
            candidates = np.arange(scores.size)
        kept = scores[candidates]
        if params.top_p < 1.0:
            order = np.argsort(kept, kind="stable")
            probabilities = softmax(kept[order])
            drop = np.cumsum(probabilities) <= 1 - params.top_p
            drop[-1] = False  # always keep the likeliest token
            keep = np.sort(order[~drop])
            candidates, kept = candidates[keep], kept[keep]
        return int(candidates[self.generator.choice(kept.size, p=softmax(kept))])

    def skip(self) -> None:
        """Advance the random stream past one token that was taken without being chosen (a grammar forced it)."""
        if not self.params.greedy:
            self.generator.random()  # what choose's one draw takes


_scratch = threading.local()


def scratch(name: str, size: int) -> np.ndarray:
    """Return this thread's float32 scratch array of size for name, made once (a thread samples one row at a time)."""
    arrays: dict[tuple[str, int], np.ndarray] = _scratch.__dict__.setdefault("arrays", {})
    if (name, size) not in arrays:
        arrays[(name, size)] = np.empty(size, dtype=np.float32)
    return arrays[(name, size)]


def penalise(picked: np.ndarray, penalty: float) -> np.ndarray:
    """Return logits of tokens already seen, made less likely by the repetition penalty as transformers does."""
    return np.where(picked < 0, picked * penalty, picked / penalty)


def softmax(scores: np.ndarray) -> np.ndarray:
    exponentials = np.exp(scores.astype(np.float64) - scores.max())
    return exponentials / exponentials.sum()
