"""The models a server offers: PALAVER_MODELS read into names and sources, or PALAVER_MODEL alone."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError

# What a model's name may hold: what hub ids and file names use, and nothing a URL or a form would mangle.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,99}")


@dataclass(frozen=True)
class ModelEntry:
    """One configured model: the name clients use, and where it comes from (as PALAVER_MODEL takes it)."""

    name: str
    source: str

    def settings(self, settings: Settings) -> Settings:
        """Return the server's settings with this model in PALAVER_MODEL's place."""
        return dataclasses.replace(settings, model=self.source, models="")


def configured_models(settings: Settings) -> list[ModelEntry]:
    """Return the models settings name, the default first; raise ConfigurationError naming what is wrong."""
    if not settings.models.strip():
        return [ModelEntry(settings.model_name, settings.model)]
    if settings.backend == "openai":
        raise ConfigurationError(
            "PALAVER_MODELS: serves models in this process; with PALAVER_BACKEND=openai, name the upstream's model "
            "in PALAVER_UPSTREAM_MODEL"
        )
    entries: list[ModelEntry] = []
    for item in settings.models.split(","):
        item = item.strip()
        if not item:
            continue
        name, equals, source = item.partition("=")
        if not equals:  # just a source: named as PALAVER_MODEL would name it
            name, source = Settings(model=item).model_name, item
        name, source = name.strip(), source.strip()
        if source.lower() in ("embedded", "default"):
            source = ""
        if not NAME.fullmatch(name):
            raise ConfigurationError(
                f"PALAVER_MODELS: {name!r} is not a model name: use letters, digits and . _ : / + - (up to 100)"
            )
        if any(entry.name == name for entry in entries):
            raise ConfigurationError(f"PALAVER_MODELS: the name {name!r} is given twice")
        entries.append(ModelEntry(name, source))
    if not entries:
        raise ConfigurationError("PALAVER_MODELS: lists no model")
    return entries
