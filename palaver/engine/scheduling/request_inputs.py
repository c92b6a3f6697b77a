"""What a request gives the loaded model: its prompt's tokens, the grammar its reply must follow, and token bytes."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from palaver.core.errors import InvalidRequest
from palaver.engine.scheduling.generation import GenerationRequest

if TYPE_CHECKING:
    from palaver.engine.decoding.constraints import Constraint, Constraints
    from palaver.engine.prompting.model_family import ModelFamily, Prompt


class RequestInputs:
    """Turn requests into the loaded model's inputs, on each request's own thread, never the engine's."""

    def __init__(self, family: ModelFamily):
        self.family = family
        self._lock = threading.Lock()
        self._constraints: Constraints | None = None

    def prepare(self, request: GenerationRequest) -> None:
        """Build the request's prompt and grammar, and the token bytes its logprobs will name."""
        request.built = self.prompt(request)
        request.constraint = self.constraint(request)
        if request.params.logprobs is not None:
            self.constraints().token_bytes()  # made here, once, rather than on the engine's thread

    def prompt(self, request: GenerationRequest) -> Prompt:
        """Return the token ids the model is fed for request: a chat's (with its tools) or a raw prompt's."""
        if request.messages is not None:
            tools = request.tools.prompt_tools() if request.tools is not None else None
            return self.family.build_prompt(request.messages, request.params.max_new_tokens, tools)
        assert request.prompt is not None  # a request carries messages or a prompt
        return self.family.text_prompt(request.prompt, request.params.max_new_tokens)

    def constraint(self, request: GenerationRequest) -> Constraint | None:
        """Return the grammar the request's reply must follow: its tools' and answer's, or its schema's."""
        from palaver.engine.decoding.constraints import json_schema_grammar, lark_grammar

        calls = request.tools.grammar(request.params.json_schema) if request.tools is not None else None
        if calls is not None:
            return self.constraints().constraint(lark_grammar(calls), param="tools")
        if request.params.json_schema is not None:
            grammar = json_schema_grammar(request.params.json_schema)
            return self.constraints().constraint(grammar, param="response_format.json_schema.schema")
        return None

    def constraints(self) -> Constraints:
        """Return the model's grammar compiler, made on first use (it reads the whole vocabulary once)."""
        with self._lock:
            if self._constraints is None:
                from palaver.engine.decoding.constraints import Constraints

                tokenizer = self.family.tokenizer
                vocab = int(getattr(self.family.model.config, "vocab_size", 0) or len(tokenizer))
                self._constraints = Constraints(tokenizer, vocab, tokenizer.eos_token_id)
            return self._constraints

    def text_of(self, token_ids: list[int]) -> str:
        """Return the text of token ids; ids past the vocabulary are a 400 naming 'tokens'."""
        tokenizer = self.family.tokenizer
        vocabulary = len(tokenizer)
        for index, token in enumerate(token_ids):
            if not 0 <= token < vocabulary:
                raise InvalidRequest(f"'tokens[{index}]' must be a token id from 0 to {vocabulary - 1}", param="tokens")
        return str(tokenizer.decode(token_ids))
