"""Shared vocabulary: the settings table, generation parameters, messages and replies."""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from errors import ConfigurationError, InvalidRequest

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"

# ---------------------------------------------------------------------------
# Settings: one declarative table of PALAVER_* environment variables.


def parse_bool(value: str) -> bool:
    """Parse a boolean written as 1/0, true/false, yes/no or on/off."""
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_optional_int(value: str) -> int | None:
    """Parse an integer, or an empty string as None."""
    return None if str(value).strip() == "" else int(value)


def default_cache_dir() -> str:
    """Return the per-user cache directory, following XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return os.path.join(base, "palaver")


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env_var(self) -> str:
        return "PALAVER_" + self.name.upper()

    @property
    def default(self) -> Any:
        """Return the default, which the Settings dataclass below holds."""
        return Settings.__dataclass_fields__[self.name].default


SETTINGS: tuple[Setting, ...] = (
    Setting("model", str,
            "Model to serve: a Hugging Face id, a local model directory, or a .gguf file. "
            "Empty means the embedded SmolLM2-135M-Instruct."),
    Setting("cache_dir", str,
            "Where converted GGUF models and the generated secret key are kept. "
            "Default: `$XDG_CACHE_HOME/palaver` or `~/.cache/palaver`."),
    Setting("preload", parse_bool,
            "Load the model at start-up instead of on the first message."),
    Setting("secret_key", str,
            "Key that signs session cookies. Empty means a random key kept in the cache directory."),
    Setting("system_prompt", str, "System prompt put before every conversation (the `default` preset)."),
    Setting("user_template", str,
            "Template for every user message, with `{text}` where the message goes (the `default` preset). "
            "Empty means the message as it is."),
    Setting("preset", str, "Preset used when a request names none: `default` or a preset file's name."),
    Setting("presets_dir", str, "Directory of extra preset files (`NAME.json`), beside the built-in ones."),
    Setting("api_keys", str,
            "Comma-separated API keys. When set, `/api/*`, `/v1/*` and `/invocations` need "
            "`Authorization: Bearer <key>`."),
    Setting("page_requires_key", parse_bool, "Ask for one of the API keys before showing the chat page."),
    Setting("max_message_chars", int, "Longest accepted message, in characters."),
    Setting("max_body_bytes", int, "Largest accepted request body; larger ones get 413."),
    Setting("max_context_tokens", int,
            "Cap on prompt plus reply tokens, below the model's own context length."),
    Setting("max_history_turns", int,
            "Messages (user and assistant) kept per conversation; older ones are forgotten."),
    Setting("max_conversations", int,
            "Conversations kept in memory; the least recently used is evicted first."),
    Setting("conversation_ttl", int, "Seconds of inactivity after which a conversation expires."),
    Setting("load_wait", float,
            "Seconds a request waits for a loading model before a 503 with Retry-After."),
    Setting("request_timeout", float, "Seconds a generation may take before it is cancelled."),
    Setting("torch_threads", int, "Threads torch uses for inference; 0 keeps torch's default."),
    Setting("http_threads", int, "Request threads per gunicorn worker."),
    Setting("max_new_tokens", int, "Default longest reply, in tokens."),
    Setting("temperature", float, "Default sampling temperature; 0 means greedy decoding."),
    Setting("top_p", float, "Default nucleus sampling threshold."),
    Setting("top_k", int, "Default top-k sampling cut-off; 0 disables it."),
    Setting("repetition_penalty", float, "Default penalty for repeating tokens; 1 disables it."),
    Setting("do_sample", parse_bool, "Sample by default; false means greedy decoding."),
    Setting("seed", parse_optional_int, "Default random seed; empty means unseeded."),
)


@dataclass(frozen=True)
class Settings:
    model: str = ""
    cache_dir: str = field(default_factory=default_cache_dir)
    preload: bool = False
    secret_key: str = ""
    system_prompt: str = ""
    user_template: str = ""
    preset: str = "default"
    presets_dir: str = ""
    api_keys: str = ""
    page_requires_key: bool = False
    max_message_chars: int = 2000
    max_body_bytes: int = 65536
    max_context_tokens: int = 2048
    max_history_turns: int = 40
    max_conversations: int = 1000
    conversation_ttl: int = 86400
    load_wait: float = 60
    request_timeout: float = 120
    torch_threads: int = 0
    http_threads: int = 16
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    do_sample: bool = True
    seed: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from PALAVER_* variables, then apply overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env_var)
            if raw is None:
                continue
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{setting.env_var}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.generation_defaults()  # fail at start-up, not on the first request
        return settings

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def model_name(self) -> str:
        """Return the served model's name as clients see it, without loading it."""
        if not self.model:
            return EMBEDDED_MODEL_NAME
        path = Path(self.model).expanduser()
        if self.model.endswith(".gguf"):
            return path.stem
        return path.name if self.model.startswith((".", "/", "~")) or path.is_dir() else self.model

    def generation_defaults(self) -> "GenerationParams":
        """Return the default generation parameters, validated."""
        raw = {param.name: getattr(self, param.name, param.default) for param in GENERATION_PARAMETERS}
        try:
            return GenerationParams(**{p.name: p.check(raw[p.name]) for p in GENERATION_PARAMETERS})
        except InvalidRequest as exc:
            raise ConfigurationError(f"PALAVER_{exc.param.upper()}: {exc.message}") from None


assert [f.name for f in fields(Settings)] == [s.name for s in SETTINGS], "SETTINGS and Settings disagree"


def settings_markdown() -> str:
    """Render the settings table as Markdown for the README."""
    lines = ["| Variable | Default | What it does |", "|---|---|---|"]
    for setting in SETTINGS:
        default = setting.default
        if default in ("", None, MISSING):
            shown = "(empty)"
        else:
            shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        lines.append(f"| `{setting.env_var}` | {shown} | {setting.help} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Generation parameters: types, ranges and the one validation path.


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: type
    minimum: float | None
    maximum: float | None
    help: str
    exclusive_minimum: bool = False
    nullable: bool = False
    default: Any = None  # for parameters that have no setting

    def range_text(self) -> str:
        """Describe the allowed values in words, for error messages."""
        if self.kind is bool:
            return "true or false"
        if self.kind is tuple:
            return f"a string or a list of at most {self.maximum} non-empty strings"
        low = f"greater than {self.minimum}" if self.exclusive_minimum else f"at least {self.minimum}"
        text = f"{'an integer' if self.kind is int else 'a number'} {low} and at most {self.maximum}"
        return text + (", or null" if self.nullable else "")

    def check(self, value: Any, *, from_text: bool = False, field_name: str | None = None) -> Any:
        """Return value converted to this parameter's type, or raise InvalidRequest naming field_name."""
        try:
            return self._check(value, from_text)
        except InvalidRequest:
            field_name = field_name or self.name
            raise InvalidRequest(f"'{field_name}' must be {self.range_text()}", param=field_name) from None

    def _check(self, value: Any, from_text: bool) -> Any:
        if from_text:
            value = self._from_text(value)
        if value is None and self.nullable:
            return None
        if self.kind is tuple:
            return self._check_strings(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise self._invalid()
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._invalid()
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise self._invalid()
            value = int(value)
        else:
            value = float(value)
        too_low = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_low or value > self.maximum:
            raise self._invalid()
        return value

    def _check_strings(self, value: Any) -> tuple[str, ...]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or len(values) > self.maximum:
            raise self._invalid()
        if not all(isinstance(v, str) and 0 < len(v) <= 100 for v in values):
            raise self._invalid()
        return tuple(values)

    def _from_text(self, text: Any) -> Any:
        if not isinstance(text, str) or self.kind is tuple:
            return text
        if text.strip() == "" and self.nullable:
            return None
        try:
            return parse_bool(text) if self.kind is bool else self.kind(text)
        except ValueError:
            raise self._invalid() from None

    def _invalid(self) -> "InvalidRequest":
        return InvalidRequest(f"'{self.name}' must be {self.range_text()}", param=self.name)

    def describe(self, default: Any) -> dict[str, Any]:
        """Describe this parameter for the published schema."""
        kind = {bool: "boolean", int: "integer", float: "number", tuple: "string or array of strings"}[self.kind]
        return {"name": self.name, "type": kind, "default": default, "minimum": self.minimum,
                "maximum": self.maximum, "exclusive_minimum": self.exclusive_minimum,
                "nullable": self.nullable, "description": self.help}


GENERATION_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("max_new_tokens", int, 1, 1024, "Longest reply, in tokens."),
    Parameter("temperature", float, 0.0, 2.0, "Sampling temperature; 0 means greedy decoding."),
    Parameter("top_p", float, 0.0, 1.0, "Sample from the smallest set of tokens whose probability reaches top_p.",
              exclusive_minimum=True),
    Parameter("top_k", int, 0, 1000, "Sample from the k most likely tokens; 0 disables the cut-off."),
    Parameter("repetition_penalty", float, 1.0, 2.0, "Penalty for repeating tokens; 1 disables it."),
    Parameter("do_sample", bool, None, None, "Sample; false means greedy decoding."),
    Parameter("seed", int, 0, 2**32 - 1, "Random seed for reproducible sampling.", nullable=True),
    Parameter("stop", tuple, 0, 4, "Text that ends the reply when generated; it is left out of the reply.",
              default=()),
)
PARAMETERS_BY_NAME = {param.name: param for param in GENERATION_PARAMETERS}


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

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def overridden(self, values: Mapping[str, Any], *, from_text: bool = False,
                   aliases: Mapping[str, str] | None = None) -> "GenerationParams":
        """Return a copy with values validated and applied; aliases map client field names to ours."""
        aliases = aliases or {}
        changes = {}
        for field_name, value in values.items():
            param = PARAMETERS_BY_NAME.get(aliases.get(field_name, field_name))
            if param is None:
                allowed = ", ".join(aliases or PARAMETERS_BY_NAME)
                raise InvalidRequest(f"unknown field '{field_name}'; accepted parameters are {allowed}",
                                     param=field_name)
            changes[param.name] = param.check(value, from_text=from_text, field_name=field_name)
        return GenerationParams(**{**self.__dict__, **changes})


# ---------------------------------------------------------------------------
# Conversation vocabulary.

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class PromptInfo:
    """What a stream reports before its first text: the prompt's size and what was left out."""

    prompt_tokens: int
    truncated_turns: int


@dataclass(frozen=True)
class Reply:
    text: str
    usage: Usage
    truncated_turns: int
    finish_reason: str  # "stop", "length" or "cancelled"
