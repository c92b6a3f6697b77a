"""Choose each next token with one request's own parameters and random generator."""

from __future__ import annotations

import torch

from palaver.core.parameters import GenerationParams


class Sampler:
    """Choose each next token with one request's own parameters and random generator."""

    def __init__(self, params: GenerationParams):
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def choose(self, logits: torch.Tensor, seen: list[int]) -> int:
        """Apply repetition penalty, temperature, top-k and top-p in transformers' order, then pick."""
        params = self.params
        scores = logits.float().clone()
        if params.repetition_penalty != 1.0 and seen:
            index = torch.tensor(sorted(set(seen)))
            picked = scores[index]
            scores[index] = torch.where(
                picked < 0, picked * params.repetition_penalty, picked / params.repetition_penalty
            )
        if params.greedy:
            return int(scores.argmax())
        scores = scores / params.temperature
        if 0 < params.top_k < scores.numel():
            scores[scores < torch.topk(scores, params.top_k).values[-1]] = -float("inf")
        if params.top_p < 1.0:
            ordered, order = torch.sort(scores)
            drop = ordered.softmax(-1).cumsum(-1) <= 1 - params.top_p
            drop[-1] = False  # always keep the likeliest token
            scores[order[drop]] = -float("inf")
        return int(torch.multinomial(scores.softmax(-1), 1, generator=self.generator))
