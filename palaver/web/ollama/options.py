"""Ollama's options and keep_alive: the sampling knobs Palaver honours, those that change nothing here, and the rest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from annotated_types import Le
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.parameters import (
    GenerationParams,
    RepetitionPenalty,
    Sampling,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    whole_number,
    with_given,
)
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused

# The longest reply a request may ask for: num_predict's -1 (no limit) and -2 (fill the context) get it, and a
# model with a short decoder caps it further, as it caps any request.
MOST_TOKENS = next(bound.le for bound in Sampling.model_fields["max_new_tokens"].metadata if isinstance(bound, Le))
# Options that tune how Ollama runs a model (its context, batch, threads, GPU layers, memory mapping) rather than
# what it writes: Palaver sizes these from its own settings, so they are accepted and change nothing.
IGNORED_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "numa",
        "num_keep",
        "num_gqa",
        "rope_frequency_base",
        "rope_frequency_scale",
        "repeat_last_n",
        "penalize_newline",
        "mirostat_tau",
        "mirostat_eta",
    }
)
# Options that would change the reply in ways Palaver cannot: accepted at the value that changes nothing.
NEUTRAL_OPTIONS: dict[str, tuple[Any, str]] = {
    "presence_penalty": (0, "options.presence_penalty is not supported (only 0); use options.repeat_penalty"),
    "frequency_penalty": (0, "options.frequency_penalty is not supported (only 0); use options.repeat_penalty"),
    "typical_p": (1, "options.typical_p is not supported (only 1); use options.top_p"),
    "tfs_z": (1, "options.tfs_z is not supported (only 1); use options.top_p or options.top_k"),
    "min_p": (0, "options.min_p is not supported (only 0); use options.top_p or options.top_k"),
    "mirostat": (0, "options.mirostat is not supported (only 0); use options.temperature, top_p and top_k"),
}
HONOURED = "temperature, top_p, top_k, num_predict, seed, stop and repeat_penalty"
Neutral = Annotated[Any, Field(description="Accepted only at the value that changes nothing.")]
# keep_alive as Ollama reads it: a number of seconds, or a Go duration such as "5m" or "1h30m".
DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
FOREVER = -1.0  # a negative keep_alive: the model stays loaded


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Read keep_alive as seconds: a number, or a duration such as "5m" or "1h30m"; FOREVER when negative."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if NUMBER.fullmatch(text):
            value = float(text)
        elif DURATION.fullmatch(text):
            size = sum(float(amount) * UNIT_SECONDS[unit] for amount, unit in DURATION_PART.findall(text))
            value = -size if text.startswith("-") else size
        else:
            raise field_error('must be seconds or a duration such as "5m" or "1h30m" (negative: stay loaded)')
    return FOREVER if value < 0 else float(value)


KeepAlive = Annotated[
    float | str | None,
    AfterValidator(keep_alive_seconds),
    Field(description="How long the model stays loaded: 0 unloads it after this request; others change nothing."),
]


class Options(RequestModel):
    """Ollama's options: the sampling parameters Palaver honours, under Ollama's names."""

    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    num_predict: int | None = Field(
        None, description=f"Longest reply, in tokens: 1 to {MOST_TOKENS}, or -1 or -2 for {MOST_TOKENS}."
    )
    seed: Seed = Field(None, description="Random seed for reproducible sampling; -1 (Ollama's default): none.")
    stop: Stop = None
    repeat_penalty: RepetitionPenalty = None
    presence_penalty: Neutral = None
    frequency_penalty: Neutral = None
    typical_p: Neutral = None
    tfs_z: Neutral = None
    min_p: Neutral = None
    mirostat: Neutral = None

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        unknown = next((name for name in data if name not in cls.model_fields and name not in IGNORED_OPTIONS), None)
        if unknown is not None:
            shown = str(unknown)[:100]
            raise body_error(f"'options.{shown}' is not an option Palaver knows; it honours {HONOURED}", shown)
        # Ollama's seed -1 is no seed: sampling is not reproducible, as with none at all.
        dropped = IGNORED_OPTIONS | ({"seed"} if data.get("seed") == -1 else set())
        return {name: value for name, value in data.items() if name not in dropped}

    @field_validator("num_predict", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        value = whole_number(value)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not (value in (-1, -2) or 1 <= value <= MOST_TOKENS):
            raise field_error(f"must be an integer from 1 to {MOST_TOKENS}, or -1 or -2 (as many as allowed)")
        return MOST_TOKENS if value < 0 else value

    @field_validator(*NEUTRAL_OPTIONS)
    @classmethod
    def _only_neutral(cls, value: Any, info: ValidationInfo) -> Any:
        neutral, message = NEUTRAL_OPTIONS[info.field_name or ""]
        return neutral_or_refused(value, (neutral,), message)

    def applied_to(self, defaults: GenerationParams) -> GenerationParams:
        """Return defaults with the parameters these options set; a temperature above 0 samples, as Ollama does."""
        params = with_given(
            defaults,
            max_new_tokens=self.num_predict,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=self.stop,
            repetition_penalty=self.repeat_penalty,
        )
        return params if self.temperature is None else with_given(params, do_sample=self.temperature > 0)
