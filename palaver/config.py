"""Settings: one declarative table of PALAVER_* environment variables, parsed into one Settings object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from palaver.errors import ConfigurationError, InvalidRequest
from palaver.parameters import GENERATION_PARAMETERS, GenerationParams, parse_bool

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


def parse_weights(value: str) -> str:
    """Parse PALAVER_WEIGHTS: auto, q8_0 or float32."""
    value = str(value).strip().lower()
    if value not in WEIGHT_MODES:
        raise ValueError(f"must be one of {', '.join(WEIGHT_MODES)}, not {value!r}")
    return value


WEIGHT_MODES = ("auto", "q8_0", "float32")


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
    Setting(
        "model",
        str,
        "Model to serve: a Hugging Face id, a local model directory, or a .gguf file. "
        "Empty means the embedded SmolLM2-135M-Instruct.",
    ),
    Setting(
        "cache_dir",
        str,
        "Where converted GGUF models and the generated secret key are kept. "
        "Default: `$XDG_CACHE_HOME/palaver` or `~/.cache/palaver`.",
    ),
    Setting(
        "weights",
        parse_weights,
        "How weights are held: `auto` keeps a GGUF file's Q4_0, Q4_1 and Q8_0 blocks as stored (about 5x "
        "less memory read per token) and other models in float32; `q8_0` also quantises other models' linear "
        "layers to Q8_0 at load (faster and smaller, slightly different replies); `float32` de-quantises "
        "everything. Blocks need the kernel that `make` builds; without it, float32.",
    ),
    Setting("preload", parse_bool, "Load the model at start-up instead of on the first message."),
    Setting("secret_key", str, "Key that signs session cookies. Empty means a random key kept in the cache directory."),
    Setting("system_prompt", str, "System prompt put before every conversation (the `default` preset)."),
    Setting(
        "user_template",
        str,
        "Template for every user message, with `{text}` where the message goes (the `default` preset). "
        "Empty means the message as it is.",
    ),
    Setting("preset", str, "Preset used when a request names none: `default` or a preset file's name."),
    Setting("presets_dir", str, "Directory of extra preset files (`NAME.json`), beside the built-in ones."),
    Setting(
        "api_keys",
        str,
        "Comma-separated API keys. When set, `/api/*`, `/v1/*`, `/invocations` and `/metrics` need "
        "`Authorization: Bearer <key>`, and the chat page asks for a key once per browser.",
    ),
    Setting("sign_in_ttl", int, "Seconds a browser stays signed in to the page after entering a key."),
    Setting(
        "sign_in_attempts",
        str,
        "Failed page sign-ins allowed per client address, as `N/minute` (or second, hour, day).",
    ),
    Setting(
        "rate_limit",
        str,
        "Requests allowed per API key, or per client address without one, as `N/minute`; empty means no limit.",
    ),
    Setting(
        "token_rate_limit",
        str,
        "Generated tokens allowed per API key, or per client address, as `N/minute`; empty means no limit.",
    ),
    Setting(
        "rate_limit_storage",
        str,
        "Where rate-limit counters live: `memory://` counts in each process; a `redis://` URL (with the "
        "`redis` package installed) shares them between processes.",
    ),
    Setting(
        "allowed_hosts",
        str,
        "Comma-separated host names this server answers for (`.example.com` takes subdomains too); others get "
        "400. Empty answers any Host.",
    ),
    Setting(
        "trusted_proxies",
        int,
        "Proxies in front of the server (1 on Heroku) whose `X-Forwarded-For` and `X-Forwarded-Proto` are "
        "believed: client addresses and https then come from them.",
    ),
    Setting("metrics", parse_bool, "Serve Prometheus metrics at `/metrics` (behind the API keys when they are set)."),
    Setting("max_message_chars", int, "Longest accepted message, in characters."),
    Setting("max_messages", int, "Most messages one chat completion request may carry; more get 400."),
    Setting("max_body_bytes", int, "Largest accepted request body; larger ones get 413."),
    Setting(
        "read_timeout",
        float,
        "Seconds a client has, from its request's first byte, to send all of it; slower ones get 408. The "
        "request is read without holding a thread (see docs/slow-clients.md).",
    ),
    Setting("max_context_tokens", int, "Cap on prompt plus reply tokens, below the model's own context length."),
    Setting("max_history_turns", int, "Messages (user and assistant) kept per conversation; older ones are forgotten."),
    Setting("max_conversations", int, "Conversations kept in memory; the least recently used is evicted first."),
    Setting("conversation_ttl", int, "Seconds of inactivity after which a conversation expires."),
    Setting("load_wait", float, "Seconds a request waits for a loading model before a 503 with Retry-After."),
    Setting("request_timeout", float, "Seconds a generation may take before it is cancelled."),
    Setting("max_batch_size", int, "Requests generated together in one forward pass; more wait their turn."),
    Setting(
        "prefix_cache_tokens",
        int,
        "Tokens of finished requests' KV cache kept so a conversation's next turn reuses them (about 46 KB "
        "each for the embedded model); 0 turns it off.",
    ),
    Setting("max_pending", int, "Requests that may wait for or use the model at once; more get 429 with Retry-After."),
    Setting(
        "max_waiting_per_conversation",
        int,
        "Messages that may wait behind a conversation's running turn; more get 409 with Retry-After. Each "
        "waits at most `PALAVER_REQUEST_TIMEOUT` seconds, then gets 409 too.",
    ),
    Setting("log_messages", parse_bool, "Include request bodies (message text) in the per-request log line."),
    Setting(
        "torch_threads",
        int,
        "Threads for inference. With GGUF blocks they are the block kernel's, and torch's other ops use one; "
        "otherwise torch's. 0 means the cores this process may use (its CPU affinity and cgroup quota) for "
        "the kernel, and torch's default otherwise.",
    ),
    Setting(
        "http_threads",
        int,
        "Request threads in the gunicorn worker; each open request or stream holds one, so keep it at or above "
        "`PALAVER_MAX_PENDING` for concurrent requests to reach the batch.",
    ),
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
    weights: str = "auto"
    preload: bool = False
    secret_key: str = ""
    system_prompt: str = ""
    user_template: str = ""
    preset: str = "default"
    presets_dir: str = ""
    api_keys: str = ""
    sign_in_ttl: int = 7 * 24 * 3600
    sign_in_attempts: str = "10/minute"
    rate_limit: str = ""
    token_rate_limit: str = ""
    rate_limit_storage: str = "memory://"
    allowed_hosts: str = ""
    trusted_proxies: int = 0
    metrics: bool = False
    max_message_chars: int = 2000
    max_messages: int = 256
    max_body_bytes: int = 65536
    read_timeout: float = 10
    max_context_tokens: int = 2048
    max_history_turns: int = 40
    max_conversations: int = 1000
    conversation_ttl: int = 86400
    load_wait: float = 60
    request_timeout: float = 120
    max_batch_size: int = 32
    prefix_cache_tokens: int = 4096
    max_pending: int = 64
    max_waiting_per_conversation: int = 4
    log_messages: bool = False
    torch_threads: int = 0
    http_threads: int = 64
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.1
    do_sample: bool = True
    seed: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
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
    def allowed_host_list(self) -> list[str]:
        return [host.strip() for host in self.allowed_hosts.split(",") if host.strip()]

    @property
    def model_name(self) -> str:
        """Return the served model's name as clients see it, without loading it."""
        if not self.model:
            return EMBEDDED_MODEL_NAME
        path = Path(self.model).expanduser()
        if self.model.endswith(".gguf"):
            return path.stem
        return path.name if self.model.startswith((".", "/", "~")) or path.is_dir() else self.model

    def generation_defaults(self) -> GenerationParams:
        """Return the default generation parameters, validated."""
        raw = {param.name: getattr(self, param.name, param.default) for param in GENERATION_PARAMETERS}
        try:
            return GenerationParams(**{p.name: p.check(raw[p.name]) for p in GENERATION_PARAMETERS})
        except InvalidRequest as exc:
            raise ConfigurationError(f"PALAVER_{(exc.param or '').upper()}: {exc.message}") from None


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
