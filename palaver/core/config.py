"""Settings: every PALAVER_* environment variable declared once, with its default and help, in one dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from palaver.core.errors import ConfigurationError, InvalidRequest
from palaver.core.hub_sources import HubSource, is_hub_source
from palaver.core.parameters import PARAMETER_NAMES, GenerationParams, Sampling
from palaver.core.setting import Setting, default_cache_dir, one_of, parse_bytes, parse_duration, setting

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


WEIGHT_MODES = ("auto", "q8_0", "float32")
ENGINES = ("auto", "native", "transformers")
KERNEL_FAMILIES = ("auto", "avx2", "avx512")
ARITHMETIC_MODES = ("exact", "fast")
SPECULATION_MODES = ("off", "prompt-lookup")
KV_TYPES = ("f16", "q8_0")
BACKENDS = ("local", "openai")
AUTH_MODES = ("none", "accounts", "oidc", "header")


@dataclass(frozen=True)
class Settings:
    """Every PALAVER_* setting, declared once: its type, default and help."""

    model: str = setting(
        "",
        "Model to serve: a GGUF file on the Hugging Face Hub (`hf:OWNER/REPO:QUANT` or `hf:OWNER/REPO/FILE.gguf`, "
        "`@REV` after `REPO` to pin a revision; pulled into the Hub's cache at start-up, see docs/models.md), a "
        "Hugging Face id, a local model or MLflow model directory, a `models:/` or `runs:/` URI, or a .gguf file. "
        "Empty means the embedded SmolLM2-135M-Instruct.",
    )
    models: str = setting(
        "",
        "Several models in one server, comma-separated, each `name=source` or just `source` (anything "
        "`PALAVER_MODEL` accepts); the first is the default. Each loads on first use and may be unloaded to make "
        "room. Empty means `PALAVER_MODEL` alone.",
    )
    keep_alive: float = setting(
        0,
        "Unload a model idle this long (`300`, `90s`, `5m`, `1h`); it loads again when next asked for. 0 keeps "
        "models loaded until memory is needed.",
        parse=parse_duration,
    )
    client_switches: int = setting(
        4,
        "Loads one client may cause in a minute that unload another model to make room; past it, that client's "
        "requests for a model not loaded get 429 with Retry-After, so alternating models costs the one who "
        "alternates. Loading the default model is never counted. 0 means no bound.",
    )
    cache_dir: str = setting(
        MISSING,
        "Where converted GGUF models and the generated secret key are kept.",
        factory=default_cache_dir,
        shown="`$XDG_CACHE_HOME/palaver` or `~/.cache/palaver`",
    )
    weights: str = setting(
        "auto",
        "How weights are held: `auto` keeps a GGUF file's blocks as stored (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the "
        "K-quants Q2_K to Q6_K, F16 and BF16: about 5x less "
        "memory read per token) and other models in float32; `q8_0` also quantises other models' linear "
        "layers to Q8_0 at load (faster and smaller, slightly different replies); `float32` de-quantises "
        "everything. Blocks need the kernel that `make` builds; without it, float32.",
        parse=one_of(*WEIGHT_MODES),
    )
    engine: str = setting(
        "auto",
        "What runs a local model: `auto` runs a Llama, Qwen2, Qwen3, Phi-3 or Gemma 3 GGUF file on the native step "
        "(one C++ call per step, with its own paged KV cache, no torch) where it can, and everything else through "
        "transformers; `native` refuses to start where the native step cannot serve the model; `transformers` never "
        "uses it.",
        parse=one_of(*ENGINES),
    )
    kernels: str = setting(
        "auto",
        "Which instructions the GGUF block kernels use: `auto` the widest this CPU has (AVX-512 where it has "
        "AVX-512 F, BW and VL, else AVX2); `avx2` or `avx512` forces a family, and a model refuses to load where the "
        "CPU lacks it. Both give the same bits; `system_fingerprint` and `/readyz` name the family in use.",
        parse=one_of(*KERNEL_FAMILIES),
    )
    arithmetic: str = setting(
        "exact",
        "How the native step multiplies: `exact` keeps activations in float32 (replies agree with transformers' "
        "float32 model, the same bits on every kernel family); `fast` quantises each row's activations to int8 "
        "blocks and multiplies them by integer dot products (AVX-512 VNNI, AVX-VNNI or AVX2), as llama.cpp does: "
        "faster, batch-invariant, and measured against float32 by KL divergence in `docs/engine.md`.",
        parse=one_of(*ARITHMETIC_MODES),
    )
    speculation: str = setting(
        "off",
        "Speculative decoding on the native step: `prompt-lookup` drafts the tokens that followed the last earlier "
        "occurrence of a reply's last tokens (in its prompt or its own text) and checks them all in one step, while "
        "one or two replies decode; replies are the same tokens with it or without (greedy or seeded). It pays "
        "where replies copy their prompt (summaries, edits of code) on kernels whose few-token steps are cheap; "
        "`docs/engine.md` has the measurement.",
        parse=one_of(*SPECULATION_MODES),
    )
    kv_type: str = setting(
        "f16",
        "How the native step's KV cache holds keys and values: `f16` as float16; `q8_0` as int8 with a float16 "
        "scale for every 32 values, as llama.cpp's `--cache-type-k q8_0` does: about half the memory a token, so "
        "the same `PALAVER_MEMORY_LIMIT` holds twice the contexts, at a KL divergence `docs/engine.md` measures.",
        parse=one_of(*KV_TYPES),
    )
    jump_forward: bool = setting(
        True,
        "Where a reply's grammar (a JSON schema, a tool call) allows one continuation alone, such as a key and its "
        "punctuation, the native step takes that text as the tokenizer writes it, without a step a token, and "
        "computes it with the next step; the next turn then finds the reply in the prefix cache. False gives every "
        "token its own step, chosen by the model under the grammar.",
    )
    memory_limit: int = setting(
        0,
        "Bytes the worker may hold, such as `512MB`: the native step's KV cache gets what is left after the "
        "weights, and requests wait for room instead of growing past it; with `PALAVER_MODELS`, the least "
        "recently used idle model is unloaded when another needs the room. 0 means the cgroup's memory limit "
        "where there is one, else only `PALAVER_MAX_BATCH_SIZE` full contexts bound it.",
        parse=parse_bytes,
    )
    backend: str = setting(
        "local",
        "Where replies are generated: `local` runs the model in each worker; `openai` sends generation to the "
        "OpenAI-compatible server at `PALAVER_UPSTREAM_URL` (vLLM, TGI, llama.cpp, Ollama, OpenAI, or another "
        "Palaver).",
        parse=one_of(*BACKENDS),
    )
    upstream_url: str = setting("", "The upstream server's `/v1` base URL, for `PALAVER_BACKEND=openai`.")
    upstream_api_key: str = setting("", "API key sent to the upstream server, if it needs one.")
    upstream_model: str = setting("", "Upstream model to use. Empty means the first model the upstream lists.")
    preload: bool = setting(False, "Load the model at start-up instead of on the first message.")
    secret_key: str = setting(
        "",
        "Key that signs session cookies. Empty means a random key kept in the cache directory.",
    )
    system_prompt: str = setting("", "System prompt put before every conversation (the `default` preset).")
    user_template: str = setting(
        "",
        "Template for every user message, with `{text}` where the message goes (the `default` preset). Empty "
        "means the message as it is.",
    )
    preset: str = setting("default", "Preset used when a request names none: `default` or a preset file's name.")
    presets_dir: str = setting("", "Directory of extra preset files (`NAME.json`), beside the built-in ones.")
    api_keys: str = setting(
        "",
        "Comma-separated API keys. When set, `/api/*`, `/v1/*`, `/invocations` and `/metrics` need "
        "`Authorization: Bearer <key>` (or `x-api-key: <key>`), and the chat page asks for a key once per browser.",
    )
    sign_in_ttl: int = setting(
        7 * 24 * 3600,
        "Seconds a browser stays signed in to the page after entering a key; with accounts, seconds a person's "
        "session may go unused before it ends.",
    )
    sign_in_attempts: str = setting(
        "10/minute",
        "Failed page sign-ins allowed per client address, as `N/minute` (or second, hour, day); with accounts, "
        "sign-ups count too.",
    )
    auth: str = setting(
        "none",
        "Who may use the server: `none` (anyone, or API key holders with `PALAVER_API_KEYS`); `accounts` (people "
        "sign up and sign in with a password; the first becomes the admin); `oidc` (people sign in with an "
        "OpenID Connect provider, `PALAVER_OIDC_*`); `header` (a trusted proxy names the person in "
        "`PALAVER_AUTH_HEADER`). See docs/deployment.md.",
        parse=one_of(*AUTH_MODES),
    )
    open_signup: bool = setting(
        False,
        "With `PALAVER_AUTH=accounts`, let new people in at sign-up; otherwise each waits for an admin's approval.",
    )
    admin_emails: str = setting(
        "",
        "With `PALAVER_AUTH=oidc` or `header`, comma-separated emails (or the proxy's names) of the admins, approved "
        "at their next sign-in; when set, the first person to sign in is no longer made the admin.",
    )
    oidc_issuer: str = setting(
        "",
        "With `PALAVER_AUTH=oidc`, the provider's issuer URL (`https://accounts.google.com`); its settings are read "
        "from `<issuer>/.well-known/openid-configuration` at the first sign-in.",
    )
    oidc_client_id: str = setting("", "With `PALAVER_AUTH=oidc`, this server's client id at the provider.")
    oidc_client_secret: str = setting("", "With `PALAVER_AUTH=oidc`, this server's client secret at the provider.")
    oidc_scopes: str = setting("openid email profile", "With `PALAVER_AUTH=oidc`, the scopes asked for, by spaces.")
    oidc_name: str = setting(
        "",
        "With `PALAVER_AUTH=oidc`, the provider's name on the sign-in button; empty means the issuer's host name.",
    )
    oidc_allowed_domains: str = setting(
        "",
        "With `PALAVER_AUTH=oidc`, comma-separated email domains let in (`example.com`); empty lets in any.",
    )
    oidc_allowed_groups: str = setting(
        "",
        "With `PALAVER_AUTH=oidc`, comma-separated groups (the ID token's `groups` claim) let in; empty lets in any.",
    )
    auth_header: str = setting(
        "",
        "With `PALAVER_AUTH=header`, the header naming the person (`X-Forwarded-Email` from oauth2-proxy), believed "
        "only from `PALAVER_AUTH_PROXIES`.",
    )
    auth_proxies: str = setting(
        "",
        "With `PALAVER_AUTH=header`, comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/8`) of the proxies "
        "whose `PALAVER_AUTH_HEADER` is believed: the connection's own peer, not `X-Forwarded-For`.",
    )
    rate_limit: str = setting(
        "",
        "Requests allowed per API key, or per client address without one, as `N/minute`; empty means no limit.",
    )
    token_rate_limit: str = setting(
        "",
        "Generated tokens allowed per API key, or per client address, as `N/minute`; empty means no limit.",
    )
    rate_limit_storage: str = setting(
        "memory://",
        "Where rate-limit counters live: `memory://` counts in each process; a `redis://` URL (with the "
        "`redis` package installed) shares them between processes.",
    )
    allowed_hosts: str = setting(
        "",
        "Comma-separated host names this server answers for (`.example.com` takes subdomains too); others get "
        "400. Empty answers any Host.",
    )
    trusted_proxies: int = setting(
        0,
        "Proxies in front of the server (1 on Heroku) whose `X-Forwarded-For` and `X-Forwarded-Proto` are "
        "believed: client addresses and https then come from them.",
    )
    metrics: bool = setting(False, "Serve Prometheus metrics at `/metrics` (behind the API keys when they are set).")
    max_message_chars: int = setting(2000, "Longest accepted message, in characters.")
    max_messages: int = setting(256, "Most messages one chat completion request may carry; more get 400.")
    max_body_bytes: int = setting(65536, "Largest accepted request body; larger ones get 413.")
    read_timeout: float = setting(
        10,
        "Seconds a client has, from its request's first byte, to send all of it; slower ones get 408. The "
        "request is read without holding a thread (see docs/slow-clients.md).",
    )
    max_context_tokens: int = setting(2048, "Cap on prompt plus reply tokens, below the model's own context length.")
    max_history_turns: int = setting(
        40,
        "Most recent messages (user and assistant) sent to the model before each new one; every message is "
        "stored. Past it, or past the model's context, the oldest are left out four user turns at a time (a "
        "quarter of this, if less), so that consecutive turns share the cached start of their prompt; the "
        "reply's `truncated_turns` counts them.",
    )
    database_url: str = setting(
        "",
        "Database for conversations, as a SQLAlchemy URL (`postgresql://user:pass@host/db`, `sqlite:///path`). "
        "Empty means the platform's `DATABASE_URL` when set, else SQLite in the cache directory.",
    )
    max_conversations: int = setting(
        100000,
        "Conversations kept in the database. Past it, the retention sweep deletes the least recently used "
        "conversations of the clients that hold the most, so one client's flood evicts only its own.",
    )
    sweep_interval: float = setting(60, "Seconds between retention sweeps, which run on a background thread.")
    max_conversation_turns: int = setting(
        1000,
        "Turns one conversation may hold; a message past it gets 409 `conversation_full` (regenerating or "
        "editing the last turn still works).",
    )
    conversation_ttl: int = setting(
        30 * 24 * 3600,
        "Seconds a conversation may stay idle before the retention sweep deletes it.",
    )
    turn_lease: float = setting(
        15,
        "Seconds a conversation's turn stays claimed by a process that stopped renewing it (a live one renews "
        "it every 0.25 s), as when its worker was killed mid-reply; then another process may continue the "
        "conversation. At least 2 (`15`, `5s`, `1m`).",
        parse=lambda text: parse_duration(text, at_least=2),
    )
    load_wait: float = setting(60, "Seconds a request waits for a loading model before a 503 with Retry-After.")
    request_timeout: float = setting(120, "Seconds a generation may take before it is cancelled.")
    max_batch_size: int = setting(32, "Requests generated together in one forward pass; more wait their turn.")
    prefix_cache_tokens: int = setting(
        4096,
        "Tokens of finished requests' KV cache kept so a conversation's next turn reuses them (about 46 KB "
        "each for the embedded model); 0 turns it off.",
    )
    stored_turns_bytes: int = setting(
        1 << 30,
        "Disk the native step may fill under `PALAVER_CACHE_DIR/kv` with finished turns' KV caches, so that a "
        "conversation's next turn skips its prefill after a restart, or on another worker of the machine (`2GB`, "
        "`500MB`); the least recently used go first. Each model's files are its fingerprint's alone: a changed "
        "model file never reads them. 0 keeps nothing on disk.",
        parse=parse_bytes,
        shown="`1GB`",
    )
    max_pending: int = setting(
        64,
        "Requests that may wait for or use the models at once, whichever they name; more get 429 with Retry-After.",
    )
    client_share: int = setting(
        8,
        "Rows one client (its API key, else its address) may have in flight at once: each request counts one, "
        "and each choice (`n`) or prompt of a list counts one; more get 429 with Retry-After, and a request that "
        "alone asks for more gets 400. Health probes and static files do not count. 0 means no per-client bound.",
    )
    max_connections_per_address: int = setting(
        64,
        "Open connections one client address may hold; past it, that address's idlest waiting connection is "
        "closed. Not applied with `PALAVER_TRUSTED_PROXIES` set, where every connection comes from the proxy.",
    )
    max_waiting_per_conversation: int = setting(
        4,
        "Messages that may wait behind a conversation's running turn; more get 409 with Retry-After. Each "
        "waits at most `PALAVER_REQUEST_TIMEOUT` seconds, then gets 409 too.",
    )
    log_messages: bool = setting(False, "Include request bodies (message text) in the per-request log line.")
    torch_threads: int = setting(
        0,
        "Threads for inference: the native step's, or with GGUF blocks the block kernel's (torch's other ops use one); "
        "otherwise torch's. 0 means the cores this process may use (its CPU affinity and cgroup quota) for "
        "the kernel, and torch's default otherwise.",
    )
    workers: int = setting(
        1,
        "gunicorn worker processes. Each holds its own engine and model (about 0.25 GB for the embedded one); "
        "they share conversations through the database.",
    )
    http_threads: int = setting(
        64,
        "Request threads in the gunicorn worker; each open request or stream holds one, so keep it at or "
        "above `PALAVER_MAX_PENDING` for concurrent requests to reach the batch.",
    )
    max_new_tokens: int = setting(64, "Default longest reply, in tokens.")
    temperature: float = setting(0.7, "Default sampling temperature; 0 means greedy decoding.")
    top_p: float = setting(0.9, "Default nucleus sampling threshold.")
    top_k: int = setting(50, "Default top-k sampling cut-off; 0 disables it.")
    repetition_penalty: float = setting(1.1, "Default penalty for repeating tokens; 1 disables it.")
    do_sample: bool = setting(True, "Sample by default; false means greedy decoding.")
    seed: int | None = setting(None, "Default random seed; empty means unseeded.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from PALAVER_* variables, then apply overrides; nothing is fetched, loaded or written."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for declared in SETTINGS:
            raw = environ.get(declared.env_var)
            if raw is None:
                continue
            try:
                values[declared.name] = declared.parse(raw)
            except ValueError as exc:
                raise ConfigurationError(f"{declared.env_var}: {exc}") from None
        if not values.get("database_url") and environ.get("DATABASE_URL"):  # set by Heroku and similar platforms
            values["database_url"] = environ["DATABASE_URL"]
        values.update(overrides)
        settings = cls(**values)
        settings.generation_defaults()  # fail at start-up, not on the first request
        return settings

    def explicit_names(self, environ: Mapping[str, str]) -> set[str]:
        """Return the settings given explicitly: in the environment, or away from their defaults."""
        defaults = type(self)()
        return {
            declared.name
            for declared in SETTINGS
            if declared.env_var in environ or getattr(self, declared.name) != getattr(defaults, declared.name)
        }

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def admin_email_list(self) -> list[str]:
        return comma_list(self.admin_emails)

    @property
    def allowed_host_list(self) -> list[str]:
        return [host.strip() for host in self.allowed_hosts.split(",") if host.strip()]

    @property
    def model_name(self) -> str:
        """Return the served model's name as clients see it, without loading it."""
        if not self.model:
            return EMBEDDED_MODEL_NAME
        if is_hub_source(self.model):
            return HubSource.parse(self.model).name
        path = Path(self.model).expanduser()
        if self.model.endswith(".gguf"):
            return path.stem
        return path.name if self.model.startswith((".", "/", "~")) or path.is_dir() else self.model

    def generation_defaults(self) -> GenerationParams:
        """Return the default generation parameters, validated."""
        values = {name: getattr(self, name) for name in PARAMETER_NAMES if name != "stop"}
        try:
            checked = Sampling.parse(values)
        except InvalidRequest as exc:
            raise ConfigurationError(f"PALAVER_{(exc.param or '').upper()}: {exc.message}") from None
        return GenerationParams(**{name: getattr(checked, name) for name in values})


def comma_list(text: str) -> list[str]:
    """Return a comma-separated setting's items, lowercased, without blanks."""
    return [item.strip().lower() for item in text.split(",") if item.strip()]


SETTINGS: tuple[Setting, ...] = tuple(Setting.of(declared) for declared in fields(Settings))


SETTING_NAMES = frozenset(setting.name for setting in SETTINGS)
