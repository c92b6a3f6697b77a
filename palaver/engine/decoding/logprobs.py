"""Log-probabilities of the tokens a reply chose, and of the likeliest alternatives at each step."""

from __future__ import annotations

from typing import Any

import numpy as np

from palaver.core.types import TokenLogprob, TopLogprob

MAX_TOP_LOGPROBS = 20


def token_text(token_bytes: bytes) -> str:
    """Return a token's text; a token that holds part of a character shows it as U+FFFD, as OpenAI does."""
    return token_bytes.decode("utf-8", errors="replace")


def token_logprob(logits: Any, token: int, top: int, token_bytes: list[bytes]) -> TokenLogprob:
    """Describe token's log-probability under logits (a step's scores, masked or not) and the top alternatives."""
    scores = np.asarray(logits, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    peak = finite.max()
    logprobs = scores - (peak + np.log(np.exp(finite - peak).sum()))

    def described(index: int) -> tuple[str, tuple[int, ...], float]:
        raw = token_bytes[index] if index < len(token_bytes) else b""
        return token_text(raw), tuple(raw), float(logprobs[index])

    alternatives: tuple[TopLogprob, ...] = ()
    if top > 0:
        count = min(top, finite.size)
        best = np.argpartition(-logprobs, count - 1)[:count]
        # Likeliest first; ties in token order, so the list is the same bits wherever the row runs.
        best = best[np.lexsort((best, -logprobs[best]))]
        alternatives = tuple(TopLogprob(*described(int(index))) for index in best)
    return TokenLogprob(*described(token), top=alternatives)
