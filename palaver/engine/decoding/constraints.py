"""Replies held to a grammar: llguidance masks each step's choices, with one matcher per request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import PARSER_LIMITS

CACHED_GRAMMARS = 64  # compiled grammars kept, least recently used first out
# A number's digits in a row, past which the grammar's other choices win: a schema without bounds allows
# any number of digits, and a small model may write them until max_tokens. 20 holds any 64-bit integer.
MAX_DIGITS = 20
FORCED_BYTES_A_TOKEN = 16  # forced text tokenized a step, per token the step may take


def tokenizer_json(tokenizer: Any) -> str | None:
    """Return a tokenizer's tokenizers-library JSON, or None for a tokenizer that has none (a slow one)."""
    # transformers' fast tokenizers hold it as backend_tokenizer; Palaver's FileTokenizer as backend.
    for name in ("backend_tokenizer", "backend"):
        to_str = getattr(getattr(tokenizer, name, None), "to_str", None)
        if to_str is not None:
            return str(to_str())
    return None


class GrammarFailed(InvalidRequest):
    """A reply's grammar broke down mid-reply (it outgrew the library's limits): the request fails, never 'stop'."""

    def __init__(self, param: str, tokens: int, problem: str):
        # A 400, not a 500: the same schema fails the same way again, so a client must change it, not retry.
        reason = problem.splitlines()[0][:300] if problem else "unknown"
        super().__init__(
            f"'{param}' could not be enforced after {tokens} tokens of the reply: {reason}",
            param=param,
            code="grammar_failed",
        )


class Constraint:
    """One reply's grammar: which tokens may come next, and the run of digits it has written."""

    def __init__(
        self,
        matcher: LLMatcher,
        opens_with_digit: np.ndarray,
        token_bytes: list[bytes],
        tokenizer: LLTokenizer,
        param: str = "response_format",
    ):
        self.matcher, self.opens_with_digit, self.token_bytes = matcher, opens_with_digit, token_bytes
        self.tokenizer, self.param, self.digits, self.tokens = tokenizer, param, 0, 0

    def check(self) -> None:
        """Raise GrammarFailed if the grammar is in its error state, which it never leaves."""
        if self.matcher.is_error():
            raise GrammarFailed(self.param, self.tokens, self.matcher.get_error())

    def mask(self, logits: Any) -> np.ndarray:
        """Return logits with every token the grammar forbids next set to minus infinity."""
        logits = np.asarray(logits, dtype=np.float32)
        bias = self.matcher.compute_logit_bias()
        self.check()  # a mask computed in the error state allows only the end: a broken reply would 'stop'
        allowed = np.frombuffer(bias, dtype=np.uint8)[: logits.shape[-1]] != 0
        if self.digits >= MAX_DIGITS:
            capped = allowed & ~self.opens_with_digit[: allowed.size]
            if capped.any():  # a pattern that demands more digits still gets them
                allowed = capped
        scores = np.full(logits.shape[-1], -np.inf, dtype=np.float32)
        np.copyto(scores[: allowed.size], logits[: allowed.size], where=allowed)
        return scores

    def consume(self, token: int) -> None:
        """Move the grammar past token, or raise GrammarFailed if it cannot."""
        if not self.matcher.consume_token(token):
            self.check()
            raise GrammarFailed(self.param, self.tokens, f"the grammar refused token {token}")
        self.tokens += 1
        text = self.token_bytes[token] if token < len(self.token_bytes) else b""
        trailing = len(text) - len(text.rstrip(b"0123456789"))
        self.digits = self.digits + len(text) if text and trailing == len(text) else trailing

    def forced(self, most: int) -> list[int]:
        """Return up to most of the tokenizer's tokens for the text the grammar allows alone from here."""
        # As the tokenizer writes them, where the model, choosing token by token, may split them otherwise ('"'
        # then ':"' for '":"'): the reply's tokens stay those its text tokenizes to, so the next turn's prompt finds
        # them in the prefix cache. llguidance's own forced tokens leave out the last, which the next text could join.
        text = self.matcher.compute_ff_bytes()
        self.check()
        # A schema's long const is forced whole: tokenize only what this step can take, never the rest each step.
        bound = most * FORCED_BYTES_A_TOKEN
        cut = len(text) > bound
        tokens = list(self.tokenizer.tokenize_bytes(text[:bound])) if text and most > 0 else []
        if cut:
            tokens = tokens[:-1]  # the cut may have split the last token, which the next step writes whole
        tokens = tokens[:most]
        return tokens[: self.matcher.validate_tokens(tokens)] if tokens else []

    def is_stopped(self) -> bool:
        """Whether the grammar is complete; one in its error state counts as stopped in the library, not here."""
        return bool(self.matcher.is_stopped()) and not self.matcher.is_error()


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
        """Return a fresh constraint for a built grammar (a request's Grammar.text); param is the field it came from.

        Compiled against the tokenizer once per grammar text: a compiled matcher is never used, only copied.
        """
        with self._lock:
            self._tokens()  # a model without a fast tokenizer gets its 400 before anything is built
        token_bytes = self.token_bytes()
        with self._lock:
            compiled = self._compiled.get(grammar)
            if compiled is None:
                compiled = LLMatcher(self._tokens(), grammar, log_level=0, limits=PARSER_LIMITS)
                problem = first_steps_problem(compiled)
                if problem is not None:
                    raise InvalidRequest(f"'{param}' cannot be enforced: {problem.splitlines()[0][:300]}", param=param)
                self._compiled[grammar] = compiled
                while len(self._compiled) > CACHED_GRAMMARS:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(grammar)
            assert self._opens_with_digit is not None  # set with the token bytes
            return Constraint(compiled.deep_copy(), self._opens_with_digit, token_bytes, self._tokens(), param)


def first_steps_problem(compiled: LLMatcher) -> str | None:
    """Return why a fresh grammar fails on its first steps (its first mask, the text it forces), or None."""
    # With the real tokenizer and the engine's limits, on a copy: a grammar that matches nothing (a $ref to
    # itself) or whose opening outgrows the parser (a wide object's '{') is refused before the engine sees it.
    probe = compiled.deep_copy()
    probe.compute_logit_bias()
    forced = [] if probe.is_error() else probe.compute_ff_tokens()
    if forced and probe.consume_tokens(forced):
        probe.compute_logit_bias()
    return (probe.get_error() or "the grammar failed") if probe.is_error() or compiled.is_error() else None
