"""Make the settings' model ready to serve, in the worker: fetch MLflow URIs, pull Hub sources, apply defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palaver.backends.mlflow_models import (
    MLFLOW_PRESET,
    OpenAIModel,
    TransformersModel,
    fetch_mlflow_model,
    find_mlflow_model,
    is_mlflow_uri,
)
from palaver.core.config import SETTING_NAMES, Settings
from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import is_hub_source
from palaver.core.types import ModelSource
from palaver.models.pulling import ensure, locate, servable_path

OPENAI_URL = "https://api.openai.com/v1"  # where an openai-flavour MLflow model goes when nothing else is set


def resolve_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """Return settings with their model ready: an MLflow URI fetched into the cache, a saved model's defaults applied.

    Settings given explicitly (in environ, or away from their defaults) win over what the model saved. This
    runs where the backend is created (a worker, the command line), never while settings are only read.
    """
    environ = os.environ if environ is None else environ
    explicit = settings.explicit_names(environ)
    values: dict[str, Any] = {}
    if is_mlflow_uri(settings.model):
        values["model"] = str(fetch_mlflow_model(settings.model, Path(settings.cache_dir)))
    if is_hub_source(settings.model) and settings.backend == "local":  # pulled now, so that no request waits on it
        servable_path(ensure(settings.model, settings.cache_dir, terminal=True))
    saved = find_mlflow_model(values.get("model", settings.model))
    if isinstance(saved, OpenAIModel):
        values.update(upstream_for(saved, settings, explicit, environ))
    for name, value in (saved.defaults if saved else {}).items():
        if name in SETTING_NAMES and name not in explicit:
            values.setdefault(name, value)
    resolved = dataclasses.replace(settings, **values)
    resolved.generation_defaults()  # what a model saved is checked as the variables are
    if resolved.backend == "openai" and not resolved.upstream_url:
        raise ConfigurationError("PALAVER_UPSTREAM_URL: required when PALAVER_BACKEND=openai")
    return resolved


def upstream_for(
    saved: OpenAIModel, settings: Settings, explicit: set[str], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Return the upstream settings an openai-flavour MLflow model implies, read as MLflow reads them."""
    if "backend" in explicit and settings.backend != "openai":
        raise ConfigurationError(
            f"PALAVER_BACKEND: {saved.path} is an openai-flavour MLflow model, served with PALAVER_BACKEND=openai"
        )
    return {
        "backend": "openai",
        "upstream_model": settings.upstream_model or saved.upstream_model,
        "upstream_url": settings.upstream_url
        or environ.get("OPENAI_BASE_URL")
        or environ.get("OPENAI_API_BASE")
        or OPENAI_URL,
        "upstream_api_key": settings.upstream_api_key or environ.get("OPENAI_API_KEY", ""),
        "preset": settings.preset if "preset" in explicit else MLFLOW_PRESET,
    }


def model_source(settings: Settings) -> ModelSource | None:
    """Return where a pulled Hub file, or an MLflow model's weights and tokenizer, are; None for others (the engine's).

    The engine looks a plain PALAVER_MODEL up when it loads, so a missing file is a failed load (503 and the log),
    not a server that will not start.
    """
    if is_hub_source(settings.model):  # pulled at start-up: found in the library, the Hub never asked here
        path = str(locate(settings.model, settings.cache_dir))
        return ModelSource(path, path)
    saved = find_mlflow_model(settings.model)
    if isinstance(saved, OpenAIModel):
        raise ConfigurationError(
            f"PALAVER_MODEL: {settings.model} is an openai-flavour MLflow model, served with PALAVER_BACKEND=openai"
        )
    if isinstance(saved, TransformersModel):
        return ModelSource(str(saved.model_dir), str(saved.tokenizer_dir))
    return None
