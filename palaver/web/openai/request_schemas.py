"""OpenAI's request objects as typed models: validate them, and turn them into the engine's parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from palaver.core.json_schemas import Grammar, ResponseFormat
from palaver.core.parameters import (
    REASONING_EFFORTS,
    GenerationParams,
    MaxNewTokens,
    ReasoningEffort,
    RepetitionPenalty,
    Seed,
    Stop,
    Temperature,
    Thinking,
    TopK,
    TopP,
    with_given,
)
from palaver.core.tools import (
    MAX_TOOLS,
    FunctionTool,
    NamedToolChoice,
    ToolChoiceMode,
    ToolUse,
    enforced_calls_grammar,
    unique_names,
)
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused, unsupported
from palaver.web.api.schemas import Prompts, named_model
from palaver.web.openai.messages import Conversation

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 8  # n: each choice is a row of the batch, and holds its own reply's KV pages
# Fields we accept only at a value that changes nothing; anything else is a clear 400, never ignored.
NEUTRAL_FIELDS: dict[str, tuple[Any, str]] = {
    "best_of": (1, "only best_of=1 is supported"),
    "presence_penalty": (0, "presence_penalty is not supported; use repetition_penalty"),
    "frequency_penalty": (0, "frequency_penalty is not supported; use repetition_penalty"),
    "logit_bias": ({}, "logit_bias is not supported"),
    "functions": ([], "functions are deprecated by OpenAI and not supported; send tools"),
    "function_call": ("none", "function_call is deprecated by OpenAI and not supported; send tool_choice"),
    "suffix": ("", "suffix is not supported"),
    "store": (False, "storing completions is not supported"),
    "modalities": (["text"], "only the text modality is supported"),
}
Neutral = Annotated[Any, Field(description="Accepted only at the value that changes nothing.")]


class StreamOptions(RequestModel):
    include_usage: bool = False


class CompletionFields(RequestModel):
    """The fields chat completions and completions share."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    preset: str | None = Field(None, description="Name of a Palaver preset for this request.")
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
    logit_bias: Neutral = None
    functions: Neutral = None
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
        return neutral_or_refused(value, (neutral,), message)

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

    def served_model(self, models: ModelRouter, *, required: bool = True) -> str:
        """Return the configured model's name the request names (or its source as written); 404 for any other."""
        if self.model is None and not required:
            return models.default
        return named_model(models, self.model)

    def choice_params(self, params: GenerationParams) -> list[GenerationParams]:
        """Return each choice's parameters: a given seed moves on by one per choice, so choices differ."""
        count = self.n or 1
        if params.seed is None:
            return [params] * count
        return [with_given(params, seed=params.seed + index) for index in range(count)]

    def top_logprobs_wanted(self) -> int | None:
        """Return how many alternatives each token's log-probability comes with; None: no logprobs."""
        return None

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow, as built and checked with the request; None: any text."""
        return self.response_format.grammar() if self.response_format else None

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
            logprobs=self.top_logprobs_wanted(),
        )
        # OpenAI clients sample whenever the temperature is above zero.
        return params if self.temperature is None else with_given(params, do_sample=self.temperature > 0)


class ToolFields(RequestModel):
    """The functions a chat's reply may call, as chat completions and /tokenize take them."""

    tools: list[FunctionTool] | None = Field(
        None,
        max_length=MAX_TOOLS,
        description="Functions the reply may call; an empty list (as many clients send): none.",
    )
    tool_choice: ToolChoiceMode | NamedToolChoice | None = Field(
        None, description="none, auto (the default with tools), required, or one function by name."
    )
    parallel_tool_calls: bool | None = Field(None, description="Whether a reply may make several calls (default).")
    _calls_grammar: Grammar | None = PrivateAttr(None)  # built once, when the tools are checked

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _a_mode_or_a_function(cls, choice: Any) -> Any:
        if choice in ("none", "auto", "required"):
            return choice
        try:
            return NamedToolChoice.model_validate(choice)
        except ValueError:
            raise field_error(
                'must be none, auto, required, or {"type": "function", "function": {"name": ...}}'
            ) from None

    @field_validator("tools")
    @classmethod
    def _named_once(cls, tools: list[FunctionTool] | None) -> list[FunctionTool] | None:
        return unique_names(tools) if tools else None  # no functions at all is no tools, as vLLM takes it

    @model_validator(mode="after")
    def _tools_consistent(self) -> ToolFields:
        names = [tool.function.name for tool in self.tools or ()]
        if self.tool_choice not in (None, "none", "auto") and not names:  # none and auto ask nothing of no tools
            wanted = "'required'" if self.tool_choice == "required" else "a function"
            raise body_error(
                f"'tool_choice' {wanted} needs at least one function in 'tools'; it has none", "tool_choice"
            )
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            known = ", ".join(names)
            raise body_error(f"'tool_choice' names a function that 'tools' lacks; it has: {known}", "tool_choice")
        use = self.tool_use()
        response_format: ResponseFormat | None = getattr(self, "response_format", None)
        answer = response_format.schema_text() if response_format else None
        self._calls_grammar = enforced_calls_grammar(use, answer) if use is not None else None
        return self

    def tool_use(self) -> ToolUse | None:
        """Return the functions the reply may call, and how; None without tools."""
        if not self.tools:
            return None
        return ToolUse.of(self.tools, self.tool_choice, self.parallel_tool_calls is not False)


class ChatTemplateKwargs(RequestModel):
    """What the chat template reads beside the messages, as llama-server and vLLM take it: enable_thinking only."""

    enable_thinking: Thinking = None


class ChatCompletionRequest(CompletionFields, ToolFields):
    """POST /v1/chat/completions (and MLflow's llm/v1/chat)."""

    messages: Conversation
    logprobs: bool | None = Field(None, description="Report each chosen token's log-probability.")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: this many likeliest alternatives per token."
    )
    reasoning_effort: ReasoningEffort = None
    chat_template_kwargs: ChatTemplateKwargs | None = Field(
        None, description="Variables for the chat template (an extension, as in vLLM): enable_thinking."
    )

    @model_validator(mode="after")
    def _logprobs_consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise body_error("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return self

    @model_validator(mode="after")
    def _thinking_consistent(self) -> ChatCompletionRequest:
        effort = REASONING_EFFORTS.get(self.reasoning_effort or "")
        enabled = self.chat_template_kwargs.enable_thinking if self.chat_template_kwargs else None
        if effort is not None and enabled is not None and effort != enabled:
            raise body_error(
                f"'reasoning_effort' {self.reasoning_effort} contradicts 'chat_template_kwargs.enable_thinking'",
                "reasoning_effort",
            )
        return self

    def thinking_wanted(self) -> bool | None:
        """Return whether a thinking model thinks first, as enable_thinking or reasoning_effort say; None: unsaid."""
        enabled = self.chat_template_kwargs.enable_thinking if self.chat_template_kwargs else None
        return enabled if enabled is not None else REASONING_EFFORTS.get(self.reasoning_effort or "")

    def generation_params(self, defaults: GenerationParams) -> GenerationParams:
        return with_given(super().generation_params(defaults), thinking=self.thinking_wanted())

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def reply_grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow: its calls' (which hold its answer's schema), or its schema's."""
        return self._calls_grammar or super().reply_grammar()


class TextCompletionRequest(CompletionFields):
    """POST /v1/completions (and MLflow's llm/v1/completions): one prompt or a list of them."""

    prompt: Prompts
    echo: bool = False
    logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Report each token's log-probability and this many alternatives."
    )
    tools: Neutral = None
    tool_choice: Neutral = None
    parallel_tool_calls: Neutral = None
    top_logprobs: Neutral = None

    @field_validator("tools", "tool_choice", "parallel_tool_calls", "top_logprobs")
    @classmethod
    def _chat_only(cls, value: Any, info: ValidationInfo) -> Any:
        raise unsupported(f"{info.field_name} is supported on chat completions, not on completions")

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise unsupported("n is supported on chat completions; send a list of prompts here instead")
        return n
