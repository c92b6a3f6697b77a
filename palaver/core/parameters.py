"""Generation parameters: one declaration of their types and ranges, and the values the engine receives."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from palaver.core.validation import RequestModel, expected, field_error

MAX_STOPS = 4
MAX_STOP_CHARS = 100
STOP_ACCEPTS = f"a string or a list of at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters"


def parse_bool(value: str) -> bool:
    """Parse a boolean written as 1/0, true/false, yes/no or on/off."""
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def whole_number(value: Any) -> Any:
    """Take 8.0 as 8, as JSON encoders that write every number as a float send it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def stop_strings(value: Any) -> tuple[str, ...] | None:
    """Accept one stop string or a short list of them."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) > MAX_STOPS
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_STOP_CHARS for v in values)
    ):
        raise field_error(f"must be {STOP_ACCEPTS}")
    return tuple(values)


# Each parameter once: its type, range and help. Request models name them under their own protocol's names.
MaxNewTokens = Annotated[
    int | None,
    BeforeValidator(whole_number),
    Field(ge=1, le=1024, description="Longest reply, in tokens. A model with a short decoder caps this further."),
]
Temperature = Annotated[
    float | None,
    Field(ge=0.0, le=2.0, description="Sampling temperature. 0 means greedy decoding; it is not an error."),
]
TopP = Annotated[
    float | None,
    Field(gt=0.0, le=1.0, description="Sample from the smallest set of tokens whose probability reaches top_p."),
]
TopK = Annotated[
    int | None,
    BeforeValidator(whole_number),
    Field(ge=0, le=1000, description="Sample from the k most likely tokens; 0 disables the cut-off."),
]
RepetitionPenalty = Annotated[
    float | None, Field(ge=1.0, le=2.0, description="Penalty for repeating tokens; 1 disables it.")
]
DoSample = Annotated[bool | None, Field(description="Sample; false means greedy decoding.")]
Seed = Annotated[
    int | None,
    BeforeValidator(whole_number),
    Field(ge=0, le=2**32 - 1, description="Random seed for reproducible sampling."),
]
Stop = Annotated[
    tuple[str, ...] | None,
    BeforeValidator(stop_strings),
    Field(description="Text that ends the reply. It is left out of the reply, and finish_reason is stop."),
]
Thinking = Annotated[
    bool | None,
    Field(
        description="Whether a thinking model (Qwen3, DeepSeek-R1, SmolLM3...) thinks before it answers, where its "
        "chat template can turn thinking off (enable_thinking). Null: the model's default."
    ),
]
# OpenAI's reasoning_effort: none and minimal turn thinking off, the others on; a model's thinking has no degrees.
REASONING_EFFORTS = {"none": False, "minimal": False, "low": True, "medium": True, "high": True, "xhigh": True}
ReasoningEffort = Annotated[
    Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None,
    Field(
        description="none or minimal: a thinking model answers without thinking, where its template can say; "
        "low, medium, high or xhigh: it thinks (how long is the model's own choice)."
    ),
]


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    do_sample: bool
    seed: int | None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # compact JSON the reply must follow (core/json_schemas.py); None: free text
    logprobs: int | None = None  # report each token's log-probability and this many alternatives; None: don't
    thinking: bool | None = None  # whether a thinking model thinks first, where its template can say; None: its default

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


class Sampling(RequestModel):
    """The generation parameters a request may set; those it leaves out (or sends as null) keep the defaults."""

    max_new_tokens: MaxNewTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    do_sample: DoSample = None
    seed: Seed = None
    stop: Stop = None

    def applied_to(self, defaults: GenerationParams) -> GenerationParams:
        """Return defaults with the parameters this request sets."""
        return with_given(defaults, **{name: getattr(self, name) for name in PARAMETER_NAMES})


# The parameters a setting, a form field or a saved default may set; a response format, logprobs and thinking come
# with their request.
PER_REQUEST = ("json_schema", "logprobs", "thinking")
PARAMETER_NAMES = tuple(name for name in GenerationParams.__dataclass_fields__ if name not in PER_REQUEST)


def with_given(defaults: GenerationParams, **given: Any) -> GenerationParams:
    """Return defaults with every parameter that is given (not None) replaced."""
    return replace(defaults, **{name: value for name, value in given.items() if value is not None})


def parameters_markdown() -> str:
    """Render the generation parameters as a Markdown table for the docs."""
    lines = ["| Parameter | Accepts | Meaning |", "|---|---|---|"]
    for name, field in Sampling.model_fields.items():
        accepts = STOP_ACCEPTS if name == "stop" else expected(field)
        lines.append(f"| `{name}` | {accepts} | {field.description} |")
    return "\n".join(lines)
