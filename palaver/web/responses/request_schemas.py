"""The Responses API's request: validated, and turned into the engine's parameters, tools and grammar."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import ANY_OBJECT, Grammar, checked_schema, compact, schema_grammar
from palaver.core.parameters import (
    REASONING_EFFORTS,
    GenerationParams,
    MaxNewTokens,
    ReasoningEffort,
    Temperature,
    TopP,
    with_given,
)
from palaver.core.tools import MAX_TOOLS, ToolUse, distinct_functions, enforced_calls_grammar
from palaver.core.types import Message
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused
from palaver.web.api.schemas import named_model, within_message_limit
from palaver.web.responses.items import Input, conversation_of
from palaver.web.responses.tools import (
    FunctionChoice,
    FunctionToolParam,
    ToolChoiceMode,
    a_mode_or_a_function,
    tool_use,
)

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

RESPONSE_ID = r"^[A-Za-z0-9_-]{1,64}$"
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # OpenAI's own bounds
SCHEMA_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# Fields OpenAI's API has that Palaver cannot honour: each accepted at the values that change nothing, else a 400.
NEUTRAL_FIELDS: dict[str, tuple[tuple[Any, ...], str]] = {
    "background": ((False,), "background responses are not supported; leave out background or send false"),
    "include": (([],), "include is not supported: a response holds no extra data to include"),
    "top_logprobs": ((0,), "top_logprobs is not supported on /v1/responses; /v1/chat/completions has logprobs"),
    "service_tier": (("auto", "default"), "only the default service_tier is served"),
    "prompt_cache_retention": (("in_memory",), "the prefix cache keeps prompts in memory only: send in_memory"),
    "context_management": (([],), "context_management is not supported"),
    "max_tool_calls": ((), "max_tool_calls is not supported; parallel_tool_calls: false allows one call"),
    "conversation": ((), "conversations are not supported on /v1/responses; continue one with previous_response_id"),
    "prompt": ((), "stored prompt templates are not supported; send instructions and input"),
}
Neutral = Annotated[Any, Field(description="Accepted only at a value that changes nothing.")]


class TextFormat(RequestModel):
    """What a reply must be: text, any JSON object, or JSON that follows a named schema (enforced at each token)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=SCHEMA_NAME, description="With json_schema: the schema's name.")
    schema_: Any = Field(None, alias="schema", description="With json_schema: the JSON schema, an object.")
    strict: bool | None = Field(None, description="Always enforced here; accepted for OpenAI clients.")
    description: str | None = Field(None, max_length=1000)
    _grammar: str = PrivateAttr("")  # built once, when the schema is checked

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> TextFormat:
        named = {"name": self.name, "schema": self.schema_}
        if self.type == "json_schema":
            missing = next((field for field, value in named.items() if value is None), None)
            if missing is not None:
                raise body_error(f"'text.format.{missing}' is required with type json_schema", missing)
            self._grammar = checked_schema(self.schema_, field="schema")[1]
        elif any(value is not None for value in named.values()):
            raise body_error("'text.format' takes a name and a schema with type json_schema, and only then", "type")
        return self

    def schema_text(self) -> str | None:
        """Return the schema the reply must follow as compact JSON, or None for plain text."""
        if self.type == "json_object":
            return ANY_OBJECT
        return compact(self.schema_) if self.type == "json_schema" else None

    def grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow, as checked with the request; None for plain text."""
        if self.type == "json_object":
            return Grammar(schema_grammar(ANY_OBJECT), "text.format")
        return Grammar(self._grammar, "text.format.schema") if self.type == "json_schema" else None

    def described(self) -> dict[str, Any]:
        """Describe the format as a response echoes it."""
        if self.type != "json_schema":
            return {"type": self.type}
        schema = {"name": self.name, "schema": self.schema_, "description": self.description, "strict": True}
        return {"type": "json_schema", **schema}


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = Field(None, description="Only medium: the model's own length.")


class ReasoningParam(RequestModel):
    """Whether a thinking model thinks first, as chat completions' reasoning_effort says; its reasoning is its own."""

    effort: ReasoningEffort = None
    summary: Literal["auto", "concise", "detailed"] | None = Field(
        None, description="Accepted: a reasoning item holds the reasoning itself, and no summary."
    )


class StreamOptions(RequestModel):
    include_obfuscation: bool | None = Field(None, description="Accepted; deltas carry no obfuscation padding.")


def metadata_pairs(value: dict[str, Any]) -> dict[str, Any]:
    """Accept at most 16 pairs of short string keys and values, as OpenAI bounds them."""
    if len(value) > MAX_METADATA_PAIRS or not all(
        isinstance(key, str)
        and isinstance(text, str)
        and len(key) <= MAX_METADATA_KEY
        and len(text) <= MAX_METADATA_VALUE
        for key, text in value.items()
    ):
        raise field_error(
            f"must hold at most {MAX_METADATA_PAIRS} pairs of strings, keys of at most {MAX_METADATA_KEY} "
            f"characters and values of at most {MAX_METADATA_VALUE}"
        )
    return value


class ResponsesRequest(RequestModel):
    """POST /v1/responses."""

    model: str = Field(description="A model this server serves, by name or by source.")
    input: Input
    instructions: str | None = Field(None, description="A system message for this response alone.")
    previous_response_id: str | None = Field(None, pattern=RESPONSE_ID, description="The stored response to continue.")
    store: bool = Field(True, description="Keep the response, to retrieve or continue it (the default).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[FunctionToolParam] | None = Field(None, max_length=MAX_TOOLS, description="Functions to call.")
    tool_choice: ToolChoiceMode | FunctionChoice | None = Field(
        None, description="none, auto (the default), required, or one function by name."
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether a reply may make several calls (default).")
    text: TextConfig | None = None
    max_output_tokens: MaxNewTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    truncation: Literal["auto", "disabled"] | None = Field(
        None, description="disabled (the default): a 400 when the input does not fit; auto: the oldest turns go."
    )
    metadata: dict[str, Any] | None = None
    reasoning: ReasoningParam | None = None
    user: str | None = Field(None, max_length=256, description="An opaque id of the end user: accepted.")
    safety_identifier: str | None = Field(None, max_length=256, description="An opaque id of the end user: accepted.")
    prompt_cache_key: str | None = Field(None, max_length=256, description="Accepted: the prefix cache needs none.")
    background: Neutral = None
    include: Neutral = None
    top_logprobs: Neutral = None
    service_tier: Neutral = None
    prompt_cache_retention: Neutral = None
    context_management: Neutral = None
    max_tool_calls: Neutral = None
    conversation: Neutral = None
    prompt: Neutral = None
    _calls_grammar: Grammar | None = PrivateAttr(None)  # built once, when the tools are checked

    @field_validator(*NEUTRAL_FIELDS)
    @classmethod
    def _only_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        neutrals, message = NEUTRAL_FIELDS[info.field_name or ""]
        return neutral_or_refused(value, neutrals, message)

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _a_mode_or_a_function(cls, choice: Any) -> Any:
        return a_mode_or_a_function(choice)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return metadata_pairs(value)

    @field_validator("instructions")
    @classmethod
    def _within_limit(cls, text: str, info: ValidationInfo) -> str:
        return within_message_limit(text, info)

    @field_validator("tools")
    @classmethod
    def _named_once(cls, tools: list[FunctionToolParam]) -> list[FunctionToolParam] | None:
        distinct_functions([tool.as_function() for tool in tools])
        return tools or None  # no functions at all is no tools, as vLLM takes it

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        if self.stream_options is not None and not self.stream:
            raise body_error("'stream_options' is allowed only with stream: true", "stream_options")
        names = [tool.name for tool in self.tools or ()]
        if self.tool_choice not in (None, "none", "auto") and not names:
            raise body_error("'tool_choice' needs at least one function in 'tools'; it has none", "tool_choice")
        if isinstance(self.tool_choice, FunctionChoice) and self.tool_choice.name not in names:
            known = ", ".join(names)
            raise body_error(f"'tool_choice' names a function that 'tools' lacks; it has: {known}", "tool_choice")
        use = self.tool_use()
        self._calls_grammar = enforced_calls_grammar(use, self.schema_text()) if use is not None else None
        return self

    @property
    def text_format(self) -> TextFormat | None:
        return self.text.format if self.text is not None else None

    def schema_text(self) -> str | None:
        return self.text_format.schema_text() if self.text_format is not None else None

    def served_model(self, models: ModelRouter) -> str:
        """Return the configured model's name the request names (or its source as written); 404 for any other."""
        return named_model(models, self.model)

    def tool_use(self) -> ToolUse | None:
        """Return the functions the reply may call, and how; None without tools."""
        return tool_use(self.tools, self.tool_choice, self.parallel_tool_calls is not False)

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow: its calls' (which hold its format's schema), or its format's."""
        if self._calls_grammar is not None:
            return self._calls_grammar
        return self.text_format.grammar() if self.text_format is not None else None

    def generation_params(self, defaults: GenerationParams) -> GenerationParams:
        """Return the engine's parameters: the defaults, with what this request sets."""
        params = with_given(
            defaults,
            max_new_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            json_schema=self.schema_text(),
            thinking=self.thinking_wanted(),
        )
        # OpenAI clients sample whenever the temperature is above zero.
        return params if self.temperature is None else with_given(params, do_sample=self.temperature > 0)

    def thinking_wanted(self) -> bool | None:
        """Return whether a thinking model thinks first, as reasoning.effort says; None: the model's default."""
        return REASONING_EFFORTS.get(self.reasoning.effort or "") if self.reasoning is not None else None

    def continued(self, earlier: list[Message]) -> list[Message]:
        """Return the conversation this response continues (earlier) and its input: what the next one continues."""
        conversation = [*earlier, *conversation_of(self.input)]
        if not any(message.role == "user" and message.content.strip() for message in conversation):
            raise InvalidRequest("'input' must hold a user message with text, here or earlier", param="input")
        return conversation

    def prompt_messages(self, conversation: list[Message]) -> list[Message]:
        """Return what the model reads: the instructions, which are this response's alone, then the conversation."""
        return [Message("system", self.instructions), *conversation] if self.instructions else conversation
