"""Replies held to a grammar: llguidance masks each step's choices, with one matcher per request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import COMPILE_OPTIONS

CACHED_GRAMMARS = 64  # compiled grammars kept, least recently used first out
# A number's digits in a row, past which the grammar's other choices win: a schema without bounds allows
# any number of digits, and a small model may write them until max_tokens. 20 holds any 64-bit integer.
MAX_DIGITS = 20


def tokenizer_json(tokenizer: Any) -> str | None:
    """Return a tokenizer's tokenizers-library JSON, or None for a tokenizer that has none (a slow one)."""
    # transformers' fast tokenizers hold it as backend_tokenizer; Palaver's FileTokenizer as backend.
    for name in ("backend_tokenizer", "backend"):
        to_str = getattr(getattr(tokenizer, name, None), "to_str", None)
        if to_str is not None:
            return str(to_str())
    return None


def json_schema_grammar(schema: str) -> str:
    """Return the grammar for a JSON schema (compact JSON, already checked at the boundary)."""
    return LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)


def lark_grammar(lark: str) -> str:
    """Return the grammar for Lark text (already checked at the boundary)."""
    return LLMatcher.grammar_from_lark(lark)


class Constraint:
    """One reply's grammar: which tokens may come next, and the run of digits it has written."""

    def __init__(self, matcher: LLMatcher, opens_with_digit: np.ndarray, token_bytes: list[bytes]):
        self.matcher, self.opens_with_digit, self.token_bytes = matcher, opens_with_digit, token_bytes
        self.digits = 0

    def mask(self, logits: Any) -> np.ndarray:
        """Return logits with every token the grammar forbids next set to minus infinity."""
        logits = np.asarray(logits, dtype=np.float32)
        allowed = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)[: logits.shape[-1]] != 0
        if self.digits >= MAX_DIGITS:
            capped = allowed & ~self.opens_with_digit[: allowed.size]
            if capped.any():  # a pattern that demands more digits still gets them
                allowed = capped
        scores = np.full(logits.shape[-1], -np.inf, dtype=np.float32)
        np.copyto(scores[: allowed.size], logits[: allowed.size], where=allowed)
        return scores

    def consume(self, token: int) -> None:
        """Move the grammar past token, or raise if it forbids it."""
        if not self.matcher.consume_token(token):
            raise ValueError(f"the grammar refused token {token}: {self.matcher.get_error()}")
        text = self.token_bytes[token] if token < len(self.token_bytes) else b""
        trailing = len(text) - len(text.rstrip(b"0123456789"))
        self.digits = self.digits + len(text) if text and trailing == len(text) else trailing

    def is_stopped(self) -> bool:
        return bool(self.matcher.is_stopped())


class Constraints:
    """Compile grammars for one model's tokenizer (on the caller's thread, never the engine's) and cache them."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_id: int | None):
        self.tokenizer, self.vocab_size, self.eos_token_id = tokenizer, vocab_size, eos_token_id
        self._lock = threading.Lock()
        self._ll_tokenizer: LLTokenizer | None = None
        self._token_bytes: list[bytes] | None = None
        self._opens_with_digit: np.ndarray | None = None
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()

    def _tokens(self) -> LLTokenizer:
        # Built once, on the first request that needs it: about half a second for a 49,152-token vocabulary.
        if self._ll_tokenizer is None:
            source = tokenizer_json(self.tokenizer)
            if source is None or self.eos_token_id is None:
                raise InvalidRequest(
                    "response_format and tools need a fast tokenizer with an end token, which this model lacks",
                    param="response_format",
                )
            self._ll_tokenizer = LLTokenizer(source, n_vocab=self.vocab_size, eos_token=self.eos_token_id)
        return self._ll_tokenizer

    def token_bytes(self) -> list[bytes]:
        """Return each token's bytes, by id: what logprobs report and what the digit bound counts."""
        if self._token_bytes is not None:  # made once; the engine's thread reads it without waiting on a compile
            return self._token_bytes
        with self._lock:
            if self._token_bytes is None:
                source = tokenizer_json(self.tokenizer)
                if source is not None and self.eos_token_id is not None:
                    tokens = self._tokens()
                    token_bytes = [tokens.decode_bytes([index]) for index in range(self.vocab_size)]
                else:  # a slow tokenizer: its decoded text is the nearest to bytes it has
                    token_bytes = [self.tokenizer.decode([index]).encode() for index in range(self.vocab_size)]
                self._opens_with_digit = np.array([t[:1].isdigit() for t in token_bytes], dtype=bool)
                self._token_bytes = token_bytes  # last: the unlocked read above finds everything set
            return self._token_bytes

    def constraint(self, grammar: str, param: str = "response_format") -> Constraint:
        """Return a fresh constraint for grammar (from json_schema_grammar or lark_grammar); param is its field."""
        with self._lock:
            self._tokens()  # a model without a fast tokenizer gets its 400 before anything is built
        token_bytes = self.token_bytes()
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is None:
                compiled = LLMatcher(self._tokens(), grammar, log_level=0)
                if compiled.is_error():
                    raise InvalidRequest(f"'{param}' cannot be enforced: {compiled.get_error()[:300]}", param=param)
                self._compiled[grammar] = compiled
                while len(self._compiled) > CACHED_GRAMMARS:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(grammar)
            assert self._opens_with_digit is not None  # set with the token bytes
            return Constraint(compiled.deep_copy(), self._opens_with_digit, token_bytes)
