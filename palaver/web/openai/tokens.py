"""POST /tokenize and /detokenize, with vLLM's shapes: exactly the ids the model is fed, and their text."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import BeforeValidator, Field, model_validator

from palaver.core.requests import GenerationRequest
from palaver.core.validation import RequestModel, body_error, field_error
from palaver.web.body import read_json
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.openai.messages import Conversation
from palaver.web.openai.request_schemas import CompletionFields, ToolFields
from palaver.web.security import require_api_key
from palaver.web.services import services

MAX_DETOKENIZE_IDS = 16_384
tokens = Blueprint("tokens", __name__)
tokens.before_request(require_api_key)


def token_ids(value: Any) -> Any:
    """Accept a list of at most MAX_DETOKENIZE_IDS non-negative integers."""
    if (
        not isinstance(value, list)
        or len(value) > MAX_DETOKENIZE_IDS
        or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    ):
        raise field_error(f"must be a list of at most {MAX_DETOKENIZE_IDS} token ids (integers from 0)")
    return value


class TokenizeRequest(CompletionFields, ToolFields):
    """A prompt, or chat messages as /v1/chat/completions takes them (with the same parameters)."""

    prompt: str | None = Field(None, description="Text to tokenize as it is, as /v1/completions feeds it.")
    messages: Conversation | None = Field(None, description="A conversation, as the chat template renders it.")

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise body_error("send either 'prompt' or 'messages'", param="prompt")
        return self


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: Annotated[list[int], BeforeValidator(token_ids)]


@tokens.errorhandler(Exception)
def tokens_error(exc: Exception):
    return json_error(to_palaver_error(exc))


@tokens.post("/tokenize")
def tokenize():
    app = services()
    settings, backend = app.settings, app.backend
    # Checked as a chat completion is, so a chat's count is the usage that request would report.
    given = TokenizeRequest.parse(read_json(), {"settings": settings})
    model = given.served_model(backend, required=False)
    params = given.generation_params(settings.generation_defaults())
    if given.messages is not None:
        messages = app.presets.get(given.preset).apply([message.to_message() for message in given.messages])
        request = GenerationRequest(params, messages=messages, tools=given.tool_use(), model=model)
    else:
        request = GenerationRequest(params, prompt=given.prompt, model=model)
    ids = backend.tokenize(request)
    limits = backend.model_limits(settings.load_wait, model)
    return {"count": len(ids), "max_model_len": limits.context_tokens, "tokens": ids}


@tokens.post("/detokenize")
def detokenize():
    app = services()
    given = DetokenizeRequest.parse(read_json(), {"settings": app.settings})
    model = app.backend.resolve(given.model)
    return {"prompt": app.backend.detokenize(given.tokens, model)}
