"""What a request gives the loaded model: its prompt's tokens, the grammar its reply must follow, and token bytes."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from palaver.core.errors import InvalidRequest
from palaver.core.requests import GenerationRequest
from palaver.core.tools import grammar_for
from palaver.engine.scheduling.generation import Job

if TYPE_CHECKING:
    from palaver.engine.decoding.constraints import Constraint, Constraints
    from palaver.engine.prompting.model_family import ModelFamily, Prompt


class RequestInputs:
    """Turn requests into the loaded model's inputs, on each request's own thread, never the engine's."""

    def __init__(self, family: ModelFamily):
        self.family = family
        self._lock = threading.Lock()
        self._constraints: Constraints | None = None

    def prepare(self, job: Job) -> None:
        """Build the job's prompt, compile its grammar, and make the token bytes its logprobs will name."""
        job.built = self.prompt(job.request)
        job.constraint = self.constraint(job.request)
        if job.params.logprobs is not None:
            self.constraints().token_bytes()  # made here, once, rather than on the engine's thread

    def prompt(self, request: GenerationRequest) -> Prompt:
        """Return the token ids the model is fed for request: a chat's (with its tools) or a raw prompt's."""
        if request.messages is not None:
            tools = request.tools.prompt_tools() if request.tools is not None else None
            params = request.params
            return self.family.build_prompt(
                request.messages, params.max_new_tokens, tools, request.max_history, params.thinking
            )
        assert request.prompt is not None  # a request carries messages or a prompt
        return self.family.text_prompt(request.prompt, request.params.max_new_tokens)

    def constraint(self, request: GenerationRequest) -> Constraint | None:
        """Compile the reply's grammar for the model: the one the request carries, or one built here if it has none."""
        grammar = request.grammar or grammar_for(request.params.json_schema, request.tools)
        return None if grammar is None else self.constraints().constraint(grammar.text, param=grammar.param)

    def constraints(self) -> Constraints:
        """Return the model's grammar compiler, made on first use (it reads the whole vocabulary once)."""
        with self._lock:
            if self._constraints is None:
                from palaver.engine.decoding.constraints import Constraints

                tokenizer = self.family.tokenizer
                vocab = self.family.model.vocab_size or len(tokenizer)
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
