"""OpenAI's request objects as typed models: validate them, and turn them into the engine's parameters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.config import Settings
from palaver.core.errors import InvalidRequest, NotFound
from palaver.core.json_schemas import ResponseFormat
from palaver.core.parameters import (
    GenerationParams,
    MaxNewTokens,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    with_given,
)
from palaver.core.types import Message
from palaver.core.validation import RequestModel, body_error, field_error, unsupported
from palaver.web.api.schemas import Prompts, settings_of

MAX_CHOICES = 8  # n: each choice is a row of the batch, and holds its own reply's KV pages
# Fields we accept only at a value that changes nothing; anything else is a clear 400, never ignored.
NEUTRAL_FIELDS: dict[str, tuple[Any, str]] = {
    "best_of": (1, "only best_of=1 is supported"),
    "presence_penalty": (0, "presence_penalty is not supported; use repetition_penalty"),
    "frequency_penalty": (0, "frequency_penalty is not supported; use repetition_penalty"),
    "logprobs": (False, "logprobs are not supported"),
    "top_logprobs": (0, "top_logprobs are not supported"),
    "logit_bias": ({}, "logit_bias is not supported"),
    "tools": ([], "tools are not supported"),
    "functions": ([], "functions are not supported"),
    "tool_choice": ("none", "tools are not supported"),
    "function_call": ("none", "functions are not supported"),
    "suffix": ("", "suffix is not supported"),
    "store": (False, "storing completions is not supported"),
    "modalities": (["text"], "only the text modality is supported"),
}
Neutral = Annotated[Any, Field(description="Accepted only at the value that changes nothing.")]


def text_content(content: Any) -> str:
    """Return a message's text, joining text parts; any other kind of part is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(part["text"] for part in content)
    raise field_error("must be a string or a list of text parts; only text is supported")


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, BeforeValidator(text_content)]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _within_limit(cls, content: str, info: ValidationInfo) -> str:
        max_chars = settings_of(info).max_message_chars
        if len(content) > max_chars:
            raise field_error(f"must be at most {max_chars} characters")
        return content

    def to_message(self) -> Message:
        return Message("system" if self.role == "developer" else self.role, self.content)


def message_count(messages: Any, info: ValidationInfo) -> Any:
    """Accept a list of 1 to PALAVER_MAX_MESSAGES messages, before each is checked."""
    limit = settings_of(info).max_messages
    if not isinstance(messages, list) or not 0 < len(messages) <= limit:
        got = f" (got {len(messages)})" if isinstance(messages, list) else ""
        raise field_error(f"must be a list of 1 to {limit} messages{got}")
    return messages


def with_a_user_message(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Accept messages that hold at least one non-empty user message."""
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise field_error("must hold at least one non-empty user message")
    return messages


# A chat's messages, as /v1/chat/completions and /tokenize take them.
Conversation = Annotated[list[ChatMessage], BeforeValidator(message_count), AfterValidator(with_a_user_message)]


class StreamOptions(RequestModel):
    include_usage: bool = False


class CompletionFields(RequestModel):
    """The fields chat completions and completions share."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    preset: str | None = Field(None, description="Name of a Palaver preset for this request.")
    parallel_tool_calls: Any = None
    metadata: Any = None
    max_tokens: MaxNewTokens = None
    max_completion_tokens: MaxNewTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    seed: Seed = None
    stop: Stop = None
    top_k: TopK = None  # top_k and repetition_penalty are extensions, as in vLLM
    repetition_penalty: RepetitionPenalty = None
    n: int | None = Field(
        None,
        ge=1,
        le=MAX_CHOICES,
        description=f"Choices to generate from the one prompt (chat only; at most {MAX_CHOICES}).",
    )
    best_of: Neutral = None
    presence_penalty: Neutral = None
    frequency_penalty: Neutral = None
    logprobs: Neutral = None
    top_logprobs: Neutral = None
    logit_bias: Neutral = None
    tools: Neutral = None
    functions: Neutral = None
    tool_choice: Neutral = None
    function_call: Neutral = None
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object, or json_schema: the reply follows the schema, enforced at each token."
    )
    suffix: Neutral = None
    store: Neutral = None
    modalities: Neutral = None

    @field_validator(*NEUTRAL_FIELDS)
    @classmethod
    def _only_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        neutral, message = NEUTRAL_FIELDS[info.field_name or ""]
        if value != neutral:
            raise unsupported(message)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CompletionFields:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise body_error("send either 'max_tokens' or 'max_completion_tokens', not both", param="max_tokens")
        if self.stream_options is not None and not self.stream:
            raise body_error("'stream_options' takes only include_usage, and only with stream: true", "stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def served_model(self, served: str, settings: Settings, *, required: bool = True) -> str:
        """Accept the served model's name (or PALAVER_MODEL as written); refuse any other."""
        if self.model is None and not required:
            return served
        if not self.model:
            raise InvalidRequest(f"'model' is required; this server serves '{served}'", param="model")
        if self.model not in {served, settings.model}:
            raise NotFound(
                f"the model '{self.model}' does not exist; this server serves '{served}'",
                param="model",
                code="model_not_found",
            )
        return served

    def choice_params(self, params: GenerationParams) -> list[GenerationParams]:
        """Return each choice's parameters: a given seed moves on by one per choice, so choices differ."""
        count = self.n or 1
        if params.seed is None:
            return [params] * count
        return [with_given(params, seed=params.seed + index) for index in range(count)]

    def generation_params(self, defaults: GenerationParams) -> GenerationParams:
        """Return the engine's parameters: the defaults, with what this request sets."""
        params = with_given(
            defaults,
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=self.stop,
            json_schema=self.response_format.schema_text() if self.response_format else None,
        )
        # OpenAI clients sample whenever the temperature is above zero.
        return params if self.temperature is None else with_given(params, do_sample=self.temperature > 0)


class ChatCompletionRequest(CompletionFields):
    """POST /v1/chat/completions (and MLflow's llm/v1/chat)."""

    messages: Conversation


class TextCompletionRequest(CompletionFields):
    """POST /v1/completions (and MLflow's llm/v1/completions): one prompt or a list of them."""

    prompt: Prompts
    echo: bool = False

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise unsupported("n is supported on chat completions; send a list of prompts here instead")
        return n
