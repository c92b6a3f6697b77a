"""MLflow model directories: where a saved transformers model keeps its weights and tokenizer, and its defaults."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from palaver.errors import ConfigurationError
from palaver.parameters import PARAMETER_NAMES

log = logging.getLogger("palaver.mlflow")
SERVED_FLAVORS = ("transformers",)


@dataclass(frozen=True)
class MlflowModel:
    """A transformers-flavour MLflow model: its weights, its tokenizer, and the defaults it was saved with."""

    path: Path
    model_dir: Path
    tokenizer_dir: Path
    defaults: dict[str, Any] = field(default_factory=dict)


def find_mlflow_model(spec: str) -> MlflowModel | None:
    """Return the MLflow model in directory spec, or None; refuse an MLflow model Palaver cannot serve."""
    if not spec or spec.endswith(".gguf"):
        return None
    path = Path(spec).expanduser()
    try:
        description = yaml.safe_load((path / "MLmodel").read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"PALAVER_MODEL: {path / 'MLmodel'} cannot be read: {exc}") from None
    flavors = (description or {}).get("flavors") or {}
    conf = flavors.get("transformers")
    if not isinstance(conf, dict):
        named = ", ".join(name for name in flavors if name != "python_function") or "none"
        raise ConfigurationError(
            f"PALAVER_MODEL: {path} is an MLflow model of flavour {named}; Palaver serves the "
            f"{', '.join(SERVED_FLAVORS)} flavour"
        )
    model_dir = path / str(conf.get("model_binary") or "model")
    if not model_dir.is_dir():  # saved with save_pretrained=False: only a hub reference, no weights
        raise ConfigurationError(
            f"PALAVER_MODEL: {path} holds no weights (saved with save_pretrained=False); "
            f"serve its source model, {conf.get('source_model_name')!r}, instead"
        )
    components = conf.get("components") or []
    tokenizer_dir = path / "components" / "tokenizer" if "tokenizer" in components else model_dir
    return MlflowModel(path, model_dir, tokenizer_dir, saved_defaults(description))


def saved_defaults(description: dict[str, Any]) -> dict[str, Any]:
    """Return the generation defaults an MLflow model was saved with: its inference config, then its signature's."""
    inference = ((description.get("flavors") or {}).get("python_function") or {}).get("config") or {}
    try:
        params = json.loads((description.get("signature") or {}).get("params") or "[]")
    except (TypeError, json.JSONDecodeError):
        params = []
    signature = {p["name"]: p["default"] for p in params if isinstance(p, dict) and p.get("default") is not None}
    merged = {**inference, **signature}  # as MLflow applies them: a signature default overrides the config
    ignored = sorted(set(merged) - set(PARAMETER_NAMES))
    if ignored:
        log.info("the MLflow model's parameters %s are not Palaver's; they are ignored", ", ".join(ignored))
    return {name: value for name, value in merged.items() if name in PARAMETER_NAMES}
