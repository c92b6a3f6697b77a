"""Choose each next token with one request's own parameters and random generator (numpy: no torch needed)."""

from __future__ import annotations

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
        scores = np.array(logits, dtype=np.float32)  # a copy: the caller's logits stay as they were
        if params.repetition_penalty != 1.0 and seen:
            index = np.fromiter(set(seen), dtype=np.int64)
            picked = scores[index]
            scores[index] = np.where(picked < 0, picked * params.repetition_penalty, picked / params.repetition_penalty)
        if params.greedy:
            return int(scores.argmax())
        scores = scores / np.float32(params.temperature)
        candidates = np.arange(scores.size)
        if 0 < params.top_k < scores.size:
            # The k best, without sorting the whole vocabulary; ties at the k-th score stay in, as with torch.topk.
            kth = np.partition(scores, scores.size - params.top_k)[scores.size - params.top_k]
            candidates = np.flatnonzero(scores >= kth)
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


def softmax(scores: np.ndarray) -> np.ndarray:
    exponentials = np.exp(scores.astype(np.float64) - scores.max())
    return exponentials / exponentials.sum()
