"""MLflow models: a saved transformers model's weights, tokenizer and defaults, or an openai model's template."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from palaver.core.errors import ConfigurationError
from palaver.core.parameters import PARAMETER_NAMES
from palaver.core.types import Message

log = logging.getLogger("palaver.mlflow")
SERVED_FLAVORS = ("transformers", "openai")
TEMPLATE_TASKS = ("chat.completions", "completions")
PLACEHOLDER = "{text}"
MLFLOW_PRESET = "mlflow"  # the preset an openai model's template becomes, and the server's default
URI_SCHEMES = ("models:/", "runs:/")
FIXED_VERSION = re.compile(r"^(models:/[^/@]+/\d+|models:/m-[0-9a-f]+|runs:/.+)$")  # never changes once fetched
OPENAI_NAMES = {"max_tokens": "max_new_tokens"}  # an openai model's saved parameters, named as Palaver's


@dataclass(frozen=True)
class TransformersModel:
    """A transformers-flavour MLflow model: its weights, its tokenizer, and the defaults it was saved with."""

    path: Path
    model_dir: Path
    tokenizer_dir: Path
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptTemplate:
    """An openai model's saved messages or prompt as a preset: system prompt, fixed messages, user template."""

    system_prompt: str = ""
    leading: tuple[Message, ...] = ()
    user_template: str = PLACEHOLDER


@dataclass(frozen=True)
class OpenAIModel:
    """An openai-flavour MLflow model: the upstream model it names, its task, template and saved parameters."""

    path: Path
    upstream_model: str
    task: str
    template: PromptTemplate
    defaults: dict[str, Any] = field(default_factory=dict)


MlflowModel = TransformersModel | OpenAIModel


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(URI_SCHEMES)


def fetch_mlflow_model(uri: str, cache_dir: Path) -> Path:
    """Download the MLflow model at a models:/ or runs:/ URI into the cache; a fixed version only once."""
    try:
        from mlflow.artifacts import download_artifacts
    except ImportError:
        raise ConfigurationError(
            f"PALAVER_MODEL: {uri} needs the mlflow extra: pip install 'palaver[mlflow]'"
        ) from None
    # Named after the registered model (or the run's artifact), so clients see that name, not a hash.
    name = re.split(r"[/@]", uri.split(":/", 1)[1].strip("/"))[0 if uri.startswith("models:/") else -1]
    home = cache_dir / "mlflow"
    target = home / hashlib.sha256(uri.encode()).hexdigest()[:16] / name
    if FIXED_VERSION.match(uri) and (target / "MLmodel").is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="download-", dir=home))
    try:
        fetched = Path(download_artifacts(artifact_uri=uri, dst_path=str(staging)))
        if not (fetched / "MLmodel").is_file():
            raise ConfigurationError(f"PALAVER_MODEL: {uri} holds no MLmodel file; it is not an MLflow model")
        target.parent.mkdir(parents=True, exist_ok=True)
        old = home / f"old-{staging.name}"
        if target.exists():  # a moving reference (an alias, latest): the new download replaces the old
            target.rename(old)
        fetched.rename(target)  # whole or not at all; another worker may have got there first
    except ConfigurationError:
        raise
    except OSError:
        if not (target / "MLmodel").is_file():
            raise
    except Exception as exc:  # MLflow raises its own errors, and the network's, for a bad URI or an unreachable server
        raise ConfigurationError(f"PALAVER_MODEL: {uri} cannot be fetched: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(home / f"old-{staging.name}", ignore_errors=True)
    log.info("fetched %s into %s", uri, target)
    return target


@functools.lru_cache(maxsize=8)
def find_mlflow_model(spec: str) -> MlflowModel | None:
    """Return the MLflow model in directory spec, or None; refuse an MLflow model Palaver cannot serve."""
    if not spec or spec.endswith(".gguf"):
        return None
    path = Path(spec).expanduser()
    try:
        description = yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"PALAVER_MODEL: {path / 'MLmodel'} cannot be read: {exc}") from None
    flavors = description.get("flavors") or {}
    if isinstance(flavors.get("transformers"), dict):
        return transformers_model(path, flavors["transformers"], description)
    if isinstance(flavors.get("openai"), dict):
        return openai_model(path, flavors["openai"], description)
    named = ", ".join(name for name in flavors if name != "python_function") or "none"
    raise ConfigurationError(
        f"PALAVER_MODEL: {path} is an MLflow model of flavour {named}; Palaver serves the "
        f"{' and '.join(SERVED_FLAVORS)} flavours"
    )


def transformers_model(path: Path, conf: dict[str, Any], description: dict[str, Any]) -> TransformersModel:
    model_dir = path / str(conf.get("model_binary") or "model")
    if not model_dir.is_dir():  # saved with save_pretrained=False: only a hub reference, no weights
        raise ConfigurationError(
            f"PALAVER_MODEL: {path} holds no weights (saved with save_pretrained=False); "
            f"serve its source model, {conf.get('source_model_name')!r}, instead"
        )
    components = conf.get("components") or []
    tokenizer_dir = path / "components" / "tokenizer" if "tokenizer" in components else model_dir
    inference = ((description.get("flavors") or {}).get("python_function") or {}).get("config") or {}
    return TransformersModel(path, model_dir, tokenizer_dir, saved_defaults(inference, description))


def openai_model(path: Path, conf: dict[str, Any], description: dict[str, Any]) -> OpenAIModel:
    try:
        saved = yaml.safe_load((path / str(conf.get("data") or "model.yaml")).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"PALAVER_MODEL: {path}'s openai model file cannot be read: {exc}") from None
    task = saved.get("task")
    if task not in TEMPLATE_TASKS:
        raise ConfigurationError(
            f"PALAVER_MODEL: {path} is an openai model for the task {task}; Palaver serves "
            f"{' and '.join(TEMPLATE_TASKS)}"
        )
    if task == "chat.completions":
        template = chat_template(path, saved.get("messages") or [])
    else:
        template = PromptTemplate(user_template=as_placeholder(path, saved.get("prompt") or "{prompt}"))
    template_keys = ("model", "task", "messages", "prompt")
    parameters = {OPENAI_NAMES.get(name, name): value for name, value in saved.items() if name not in template_keys}
    return OpenAIModel(path, str(saved.get("model") or ""), task, template, saved_defaults(parameters, description))


def chat_template(path: Path, messages: list[Any]) -> PromptTemplate:
    """Read saved chat messages as MLflow does: one variable takes the input; with none, the input follows."""
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise ConfigurationError(f"PALAVER_MODEL: {path}'s messages must each have a role and text content")
    with_variable = [i for i, m in enumerate(messages) if variables(m["content"]) or variables(str(m.get("role")))]
    if with_variable and (with_variable != [len(messages) - 1] or messages[-1].get("role") != "user"):
        raise ConfigurationError(
            f"PALAVER_MODEL: {path}'s template has variables outside its last message; Palaver fills one "
            "variable, in the last message, a user message, with each message it receives"
        )
    fixed = messages[:-1] if with_variable else messages
    system = "\n\n".join(m["content"] for m in fixed if m.get("role") == "system")
    leading = tuple(Message(str(m["role"]), m["content"]) for m in fixed if m.get("role") != "system")
    user = as_placeholder(path, messages[-1]["content"]) if with_variable else PLACEHOLDER
    return PromptTemplate(system, leading, user)


def variables(template: str) -> set[str]:
    """Return the names str.format would fill in template."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return set()


def as_placeholder(path: Path, template: str) -> str:
    """Rewrite a str.format template with one variable into Palaver's, where {text} marks the input."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(
            f"PALAVER_MODEL: {path}'s template {template!r} is not a format string: {exc}"
        ) from None
    names = {name for _, name, _, _ in parts if name is not None}
    if len(names) != 1:
        raise ConfigurationError(
            f"PALAVER_MODEL: {path}'s template has the variables {sorted(names) or 'none'}; Palaver fills "
            "exactly one, with each message it receives"
        )
    literal = "".join(text for text, _, _, _ in parts)
    if PLACEHOLDER in literal:
        raise ConfigurationError(f"PALAVER_MODEL: {path}'s template holds the literal text {PLACEHOLDER}")
    return "".join(text + (PLACEHOLDER if name is not None else "") for text, name, _, _ in parts)


def saved_defaults(saved: dict[str, Any], description: dict[str, Any]) -> dict[str, Any]:
    """Return the generation defaults an MLflow model was saved with: its own, then its signature's."""
    try:
        params = json.loads((description.get("signature") or {}).get("params") or "[]")
    except (TypeError, json.JSONDecodeError):
        params = []
    signature = {p["name"]: p["default"] for p in params if isinstance(p, dict) and p.get("default") is not None}
    merged = {**saved, **signature}  # as MLflow applies them: a signature default overrides the config
    ignored = sorted(set(merged) - set(PARAMETER_NAMES))
    if ignored:
        log.info("the MLflow model's parameters %s are not Palaver's; they are ignored", ", ".join(ignored))
    return {name: value for name, value in merged.items() if name in PARAMETER_NAMES}
