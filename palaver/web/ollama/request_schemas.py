"""Ollama's request bodies as typed models: /api/chat's and /api/generate's, checked and turned into the engine's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from palaver.core.embeddings import only_embeds
from palaver.core.errors import InvalidRequest, NotFound
from palaver.core.json_schemas import ANY_OBJECT, Grammar, checked_schema, schema_grammar
from palaver.core.parameters import REASONING_EFFORTS, GenerationParams, with_given
from palaver.core.tools import (
    MAX_TOOLS,
    NamedToolChoice,
    ToolChoiceMode,
    ToolUse,
    distinct_functions,
    enforced_calls_grammar,
)
from palaver.core.types import Message
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused
from palaver.web.api.schemas import within_message_limit
from palaver.web.ollama.messages import (
    IMAGES_REFUSED,
    Conversation,
    Neutral,
    ToolParam,
    conversation_messages,
)
from palaver.web.ollama.models import model_thinks
from palaver.web.ollama.options import KeepAlive, Options

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

FORMAT_PARAM = "format"
THINK_LEVELS = ("low", "medium", "high")  # gpt-oss's, in Ollama: any of them turns a model's thinking on here


@dataclass(frozen=True)
class ReplyFormat:
    """What a format asks of the reply: its schema as compact JSON, and the schema's grammar, built once."""

    schema: str
    grammar: str


def reply_format(value: Any) -> ReplyFormat | None:
    """Read a format: "json" is any object, a JSON schema its own, "" none; refuse anything else, saying why."""
    if value == "":
        return None
    if value == "json":
        return ReplyFormat(ANY_OBJECT, schema_grammar(ANY_OBJECT))
    if not isinstance(value, dict):
        raise field_error('must be "json" or a JSON schema (an object)')
    return ReplyFormat(*checked_schema(value))


def think_value(value: Any) -> Any:
    """Accept true, false or a level, naming them all otherwise."""
    if not isinstance(value, bool) and value not in THINK_LEVELS:
        raise field_error(f"must be true, false or one of {', '.join(THINK_LEVELS)}")
    return value


class OllamaRequest(RequestModel):
    """The fields /api/chat and /api/generate share: the model, the reply's format, options, stream and keep_alive."""

    model: str = Field(description="A model this server serves (see /ollama/api/tags), by name or by source.")
    format: Annotated[
        Any, AfterValidator(reply_format), Field(description='"json" (any object) or a JSON schema the reply follows.')
    ] = None
    options: Options | None = None
    stream: bool = Field(True, description="Stream newline-delimited JSON objects (Ollama's default).")
    keep_alive: KeepAlive = None
    think: Annotated[bool | Literal["low", "medium", "high"] | None, BeforeValidator(think_value)] = Field(
        None,
        description="Whether a thinking model thinks first (a level is true: its thinking has no degrees), its "
        "reasoning apart in thinking; left out, the model's default.",
    )
    logprobs: Neutral = None
    top_logprobs: Neutral = None

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any, info: ValidationInfo) -> Any:
        message = f"{info.field_name} is not supported on /ollama; /v1/chat/completions reports logprobs"
        return neutral_or_refused(value, (False, 0), message)

    @property
    def answer_schema(self) -> str | None:
        """Return the schema the format asks the reply to follow, as compact JSON; None for any text."""
        return self.format.schema if self.format else None

    @property
    def unloads_after(self) -> bool:
        """Tell whether keep_alive 0 asks for the model to be unloaded once this request is done."""
        return self.keep_alive == 0

    @property
    def thinking_wanted(self) -> bool | None:
        """Return whether a thinking model thinks first, as think says; None: the model's default."""
        return REASONING_EFFORTS[self.think] if isinstance(self.think, str) else self.think

    def served_model(self, models: ModelRouter) -> str:
        """Return the configured model the request names; 404 for any other, 400 for one that only embeds or for
        thinking asked of one that does not think (as Ollama answers)."""
        name = served_model(models, self.model)
        # Even to load it, as Ollama refuses an embedding model's chat; unloading it (`ollama stop`) is no generation
        if models.slots[name].embeds_only and not self.unloads_after:
            raise only_embeds(name)
        if self.thinking_wanted and model_thinks(models, name) is False:
            raise InvalidRequest(f'"{self.model}" does not support thinking', param="think")
        return name

    def generation_params(self, defaults: GenerationParams) -> GenerationParams:
        """Return the engine's parameters: the defaults, with the options, the format's schema and think."""
        params = self.options.applied_to(defaults) if self.options else defaults
        return with_given(params, json_schema=self.answer_schema, thinking=self.thinking_wanted)

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow (the format's schema), or None for any text."""
        return Grammar(self.format.grammar, FORMAT_PARAM) if self.format else None


def served_model(models: ModelRouter, name: str) -> str:
    """Return the configured model name means, taking Ollama's name:latest as name; 404 for any other."""
    known = ", ".join(f"'{known}'" for known in models.names)
    if not name:
        raise InvalidRequest(f"'model' is required; this server serves {known}", param="model")
    for candidate in (name, name.removesuffix(":latest")):
        try:
            return models.resolve(candidate)
        except NotFound:
            continue
    shown = name if len(name) <= 100 else name[:100] + "…"
    raise NotFound(f'model "{shown}" not found; this server serves {known} and cannot pull others', param="model")


class ChatRequest(OllamaRequest):
    """POST /ollama/api/chat: a conversation, and the tools its reply may call; no messages loads the model."""

    messages: Conversation = Field(default_factory=list)
    tools: list[ToolParam] | None = Field(None, max_length=MAX_TOOLS, description="Functions the reply may call.")
    tool_choice: ToolChoiceMode | NamedToolChoice | None = Field(
        None, description="A Palaver extension, as on /v1/chat/completions: none, auto (the default), required, or one."
    )
    _calls_grammar: Grammar | None = PrivateAttr(None)  # built once, when the tools are checked

    @field_validator("tools")
    @classmethod
    def _named_once(cls, tools: list[ToolParam]) -> list[ToolParam] | None:
        distinct_functions([tool.function.as_function() for tool in tools])
        return tools or None

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatRequest:
        names = [tool.function.name for tool in self.tools or ()]
        if self.tool_choice not in (None, "none", "auto") and not names:
            raise body_error("'tool_choice' needs at least one function in 'tools'; it has none", "tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            known = ", ".join(names)
            raise body_error(f"'tool_choice' names a function that 'tools' lacks; it has: {known}", "tool_choice")
        use = self.tool_use()
        self._calls_grammar = enforced_calls_grammar(use, self.answer_schema) if use is not None else None
        return self

    @property
    def loads_only(self) -> bool:
        """Tell whether this is Ollama's way to load (or with keep_alive 0, unload) a model: no messages."""
        return not self.messages

    def tool_use(self) -> ToolUse | None:
        """Return the functions the reply may call, and how; None without tools."""
        if not self.tools:
            return None
        functions = tuple(tool.function.as_function() for tool in self.tools)
        if isinstance(self.tool_choice, NamedToolChoice):
            return ToolUse(functions, "named", True, self.tool_choice.function.name)
        return ToolUse(functions, self.tool_choice or "auto")

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow: its calls' (which hold the format's schema), or the format's."""
        return self._calls_grammar or super().reply_grammar()

    def conversation(self) -> list[Message]:
        return conversation_messages(self.messages)


class GenerateRequest(OllamaRequest):
    """POST /ollama/api/generate: a prompt, put through the model's chat template unless raw; none loads the model."""

    prompt: str = ""
    system: str | None = Field(None, description="The system prompt.")
    raw: bool = Field(False, description="Feed the prompt as it is, with no chat template.")
    template: Neutral = None
    suffix: Neutral = None
    images: Neutral = None
    context: Neutral = None

    @field_validator("prompt", "system")
    @classmethod
    def _within_limit(cls, text: str, info: ValidationInfo) -> str:
        return within_message_limit(text, info)

    @field_validator("template")
    @classmethod
    def _no_template(cls, value: Any) -> Any:
        message = "template is not supported: the model's own chat template formats the prompt (or send raw: true)"
        return neutral_or_refused(value, ("",), message)

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: Any) -> Any:
        return neutral_or_refused(value, ("",), "suffix (fill in the middle) is not supported")

    @field_validator("images")
    @classmethod
    def _no_images(cls, value: Any) -> Any:
        return neutral_or_refused(value, ([],), IMAGES_REFUSED)

    @field_validator("context")
    @classmethod
    def _no_context(cls, value: Any) -> Any:
        message = "context is deprecated by Ollama and not supported; send the conversation to /ollama/api/chat"
        return neutral_or_refused(value, ([],), message)

    @model_validator(mode="after")
    def _raw_alone(self) -> GenerateRequest:
        if self.raw and self.system is not None:
            raise body_error("'system' has no place in a raw prompt; write it into 'prompt'", "system")
        return self

    @property
    def loads_only(self) -> bool:
        """Tell whether this is Ollama's way to load (or with keep_alive 0, unload) a model: no prompt."""
        return not self.prompt

    def conversation(self) -> list[Message]:
        """Return the prompt as a user message, after the system prompt if one is given."""
        system = [Message("system", self.system)] if self.system else []
        return [*system, Message("user", self.prompt)]
