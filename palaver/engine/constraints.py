"""Replies held to a JSON schema: llguidance masks each step's choices, with one matcher per request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import COMPILE_OPTIONS

CACHED_GRAMMARS = 64  # compiled schemas kept, least recently used first out


def tokenizer_json(tokenizer: Any) -> str | None:
    """Return a tokenizer's tokenizers-library JSON, or None for a tokenizer that has none (a slow one)."""
    # transformers' fast tokenizers hold it as backend_tokenizer; Palaver's FileTokenizer as backend.
    for name in ("backend_tokenizer", "backend"):
        to_str = getattr(getattr(tokenizer, name, None), "to_str", None)
        if to_str is not None:
            return str(to_str())
    return None


class Constraints:
    """Compile schemas for one model's tokenizer (on the caller's thread, never the engine's) and cache them."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_id: int | None):
        self.tokenizer, self.vocab_size, self.eos_token_id = tokenizer, vocab_size, eos_token_id
        self._lock = threading.Lock()
        self._ll_tokenizer: LLTokenizer | None = None
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()

    def _tokens(self) -> LLTokenizer:
        # Built once, on the first request that needs it: about half a second for a 49,152-token vocabulary.
        if self._ll_tokenizer is None:
            source = tokenizer_json(self.tokenizer)
            if source is None or self.eos_token_id is None:
                raise InvalidRequest(
                    "response_format needs a fast tokenizer with an end token, which this model lacks",
                    param="response_format",
                )
            self._ll_tokenizer = LLTokenizer(source, n_vocab=self.vocab_size, eos_token=self.eos_token_id)
        return self._ll_tokenizer

    def matcher(self, schema: str) -> LLMatcher:
        """Return a fresh matcher for schema (compact JSON, already checked at the boundary)."""
        with self._lock:
            compiled = self._compiled.get(schema)
            if compiled is None:
                grammar = LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)
                compiled = LLMatcher(self._tokens(), grammar, log_level=0)
                if compiled.is_error():
                    raise InvalidRequest(
                        f"'response_format' cannot be enforced: {compiled.get_error()[:300]}", param="response_format"
                    )
                self._compiled[schema] = compiled
                while len(self._compiled) > CACHED_GRAMMARS:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(schema)
            return compiled.deep_copy()


def masked(logits: np.ndarray, matcher: LLMatcher) -> np.ndarray:
    """Return logits with every token the matcher forbids next set to minus infinity."""
    allowed = np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8)[: logits.shape[-1]]
    scores = np.full(logits.shape[-1], -np.inf, dtype=np.float32)
    np.copyto(scores[: allowed.size], logits[: allowed.size], where=allowed != 0)
    return scores
