"""Anthropic's request objects as typed models: validate them, and turn them into the engine's request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from palaver.core.json_schemas import Grammar, compact
from palaver.core.parameters import GenerationParams, MaxNewTokens, Stop, Temperature, TopK, TopP, with_given
from palaver.core.tools import (
    MAX_TOOLS,
    NAME_PATTERN,
    Function,
    ToolUse,
    arguments_schema,
    distinct_functions,
    enforced_calls_grammar,
)
from palaver.core.types import Message
from palaver.core.validation import RequestModel, body_error, field_error, unsupported
from palaver.web.anthropic.content import CacheControl, Conversation, TextBlocks, conversation_messages
from palaver.web.api.schemas import named_model, settings_of

if TYPE_CHECKING:
    from palaver.backends import ModelRouter
    from palaver.chat.presets import Presets

# tool_choice's types, as ToolUse names them: any is OpenAI's required, and tool one function by name.
TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "named", "none": "none"}


class ToolParam(RequestModel):
    """A custom tool: a function the reply may call, its input held to input_schema."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=NAME_PATTERN, description="The tool's name: letters, digits, _ and -.")
    description: str | None = Field(None, max_length=4096)
    input_schema: dict[str, Any] = Field(description="A JSON schema of type object for the tool's input.")
    cache_control: CacheControl | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, Mapping) else None
        if isinstance(kind, str) and kind != "custom":
            raise unsupported(
                f"server tools such as '{kind}' run at Anthropic and are not supported; "
                "send custom tools: name, description and input_schema"
            )
        return data

    @field_validator("input_schema")
    @classmethod
    def _enforceable(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return arguments_schema(schema)

    def as_function(self) -> Function:
        return Function(self.name, self.description, compact(self.input_schema))


class ToolChoiceParam(RequestModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, pattern=NAME_PATTERN, description="With type tool: the tool to call.")
    disable_parallel_tool_use: bool | None = Field(None, description="Allow at most one tool_use in the reply.")

    @model_validator(mode="after")
    def _named_when_a_tool(self) -> ToolChoiceParam:
        if (self.type == "tool") != (self.name is not None):
            raise body_error("'tool_choice' takes a 'name' with type tool, and only then", "name")
        return self


class ThinkingParam(RequestModel):
    """Extended thinking: a thinking model thinks first (where its template can say), its reasoning in thinking blocks.

    budget_tokens is accepted and not enforced: max_tokens bounds the thinking and the answer together.
    """

    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(None, ge=1, description="With type enabled: the tokens thinking may take.")

    @model_validator(mode="after")
    def _budget_when_enabled(self) -> ThinkingParam:
        if (self.type == "enabled") != (self.budget_tokens is not None):
            raise body_error("'thinking' takes a 'budget_tokens' with type enabled, and only then", "budget_tokens")
        return self


class MessagesInput(RequestModel):
    """What the model reads: the model, the system prompt, the conversation and the tools (count_tokens' body)."""

    model: str = Field(description="A model this server serves, by name or by source.")
    system: TextBlocks | None = Field(None, description="The system prompt: a string or text blocks.")
    messages: Conversation
    tools: list[ToolParam] | None = Field(None, max_length=MAX_TOOLS, description="Custom tools the reply may use.")
    tool_choice: ToolChoiceParam | None = Field(None, description="auto (the default), any, tool (by name) or none.")
    thinking: ThinkingParam | None = Field(
        None, description="enabled: a thinking model thinks first, in thinking blocks; left out or disabled: not."
    )
    _calls_grammar: Grammar | None = PrivateAttr(None)  # built once, when the tools are checked

    @field_validator("system")
    @classmethod
    def _within_limit(cls, blocks: list, info: ValidationInfo) -> list:
        max_chars = settings_of(info).max_message_chars
        if sum(len(block.text) for block in blocks) > max_chars:
            raise field_error(f"must hold at most {max_chars} characters of text")
        return blocks

    @field_validator("tools")
    @classmethod
    def _named_once(cls, tools: list[ToolParam]) -> list[ToolParam] | None:
        distinct_functions([tool.as_function() for tool in tools])
        return tools or None

    @model_validator(mode="after")
    def _tools_consistent(self) -> MessagesInput:
        names = [tool.name for tool in self.tools or ()]
        choice = self.tool_choice
        if choice is not None and choice.type in ("any", "tool") and not names:
            raise body_error(f"'tool_choice' {choice.type} needs a tool in 'tools'; it has none", "tool_choice")
        if choice is not None and choice.name is not None and choice.name not in names:
            known = ", ".join(names)
            raise body_error(f"'tool_choice' names a tool that 'tools' lacks; it has: {known}", "tool_choice")
        use = self.tool_use()
        self._calls_grammar = enforced_calls_grammar(use) if use is not None else None
        return self

    def served_model(self, models: ModelRouter) -> str:
        """Return the configured model's name the request names (or its source as written); 404 for any other."""
        return named_model(models, self.model)

    def tool_use(self) -> ToolUse | None:
        """Return the tools the reply may use, and how; None without tools."""
        if not self.tools:
            return None
        choice = self.tool_choice
        parallel = choice is None or not choice.disable_parallel_tool_use
        functions = tuple(tool.as_function() for tool in self.tools)
        if choice is None:
            return ToolUse(functions, "auto", parallel)
        return ToolUse(functions, TOOL_CHOICES[choice.type], parallel, choice.name)

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow, as built and checked with the request; None: any text."""
        return self._calls_grammar

    def thinking_wanted(self) -> bool:
        """Return whether a thinking model thinks first: only when asked, as Anthropic's models do."""
        return self.thinking is not None and self.thinking.type == "enabled"

    def conversation(self, presets: Presets) -> list[Message]:
        """Return the system prompt and the turns as Palaver's messages, with the server's default preset."""
        return presets.get(None).apply(conversation_messages(self.system, self.messages))


class MetadataParam(RequestModel):
    user_id: str | None = Field(None, max_length=256, description="An opaque id of the end user: accepted.")


class MessagesRequest(MessagesInput):
    """POST /v1/messages."""

    max_tokens: MaxNewTokens = Field(description="The longest reply, in tokens; required, as Anthropic's API has it.")
    stream: bool = False
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    stop_sequences: Stop = None
    metadata: MetadataParam | None = None

    def generation_params(self, defaults: GenerationParams) -> GenerationParams:
        """Return the engine's parameters: the defaults, with what this request sets."""
        params = with_given(
            defaults,
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=self.stop_sequences,
            thinking=self.thinking_wanted(),
        )
        return params if self.temperature is None else with_given(params, do_sample=self.temperature > 0)
