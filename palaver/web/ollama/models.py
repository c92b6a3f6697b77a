"""The served models as Ollama lists them: /api/tags, /api/show and /api/ps, from the router and the models' files."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from palaver.core.validation import RequestModel, body_error
from palaver.web.ollama.model_files import ModelFacts, model_facts

if TYPE_CHECKING:
    from palaver.backends import ModelRouter
    from palaver.backends.slot import Slot

# Every model that generates takes tools (a template that cannot write them gets them as text) and writes
# completions; a thinking model thinks apart from its answer. None sees images or fills in the middle; every one
# embeds (/api/embed), which Ollama lists only for embedding models: a sentence encoder, which only embeds.
CAPABILITIES = ["completion", "tools"]
THINKING = "thinking"
EMBEDDING = ["embedding"]
FOREVER = timedelta(days=365 * 200)  # how far off a model that is never unloaded for idling expires
PARAMETER_WIDTH = 30  # Ollama's parameters column, as `ollama show --parameters` prints it


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str

    @classmethod
    def of(cls, facts: ModelFacts) -> ModelDetails:
        return cls(
            format=facts.format,
            family=facts.family,
            families=[facts.family] if facts.family else None,
            parameter_size=facts.parameter_size,
            quantization_level=facts.quantization_level,
        )


class ModelTag(BaseModel):
    """A model as /api/tags lists it."""

    name: str
    model: str
    modified_at: datetime
    size: int
    digest: str
    details: ModelDetails

    @classmethod
    def of(cls, router: ModelRouter, name: str) -> ModelTag:
        facts, shown = served_facts(router, name), router.describe_model(name)["name"]
        return cls(
            name=shown,
            model=shown,
            modified_at=facts.modified_at,
            size=facts.size,
            digest=facts.digest,
            details=ModelDetails.of(facts),
        )


class TagList(BaseModel):
    models: list[ModelTag]


class RunningModel(ModelTag):
    """A loaded model as /api/ps lists it: when it would be unloaded for idling, and the memory it holds."""

    expires_at: datetime
    size_vram: int = 0  # Palaver runs on the CPU
    context_length: int | None = None

    @classmethod
    def running(cls, router: ModelRouter, name: str) -> RunningModel:
        slot = router.slots[name]
        tag = ModelTag.of(router, name).model_dump()
        context = slot.limits.context_tokens if slot.limits else served_facts(router, name).context_length
        return cls(**{**tag, "size": slot.charge()}, expires_at=expires_at(router, slot), context_length=context)


class RunningList(BaseModel):
    models: list[RunningModel]


class ShowRequest(RequestModel):
    """POST /ollama/api/show: the model, as model (or name, as older clients send it)."""

    model: str | None = Field(None, description="A model this server serves.")
    name: str | None = Field(None, description="The model, as older clients name the field.")
    verbose: bool = Field(False, description="Accepted: the vocabulary's arrays are never shown.")

    @model_validator(mode="after")
    def _one_model(self) -> ShowRequest:
        if self.model is None and self.name is None:
            raise body_error("'model' is required: the model to show", "model")
        return self


class ShowResponse(BaseModel):
    """A model as /api/show describes it: its details, its file's metadata, template and default parameters."""

    modelfile: str
    parameters: str
    template: str
    license: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: datetime

    @classmethod
    def of(cls, router: ModelRouter, name: str) -> ShowResponse:
        facts = served_facts(router, name)
        parameters = parameter_lines(router.slots[name])
        lines = [f"FROM {router.describe_model(name)['name']}"]
        if facts.template:
            lines.append(f'TEMPLATE """{facts.template}"""')
        lines += [f"PARAMETER {line}" for line in parameters]
        modelfile = "# Palaver serves this model as PALAVER_MODELS configures it, not from a Modelfile\n"
        return cls(
            modelfile=modelfile + "\n".join(lines) + "\n",
            parameters="\n".join(parameters),
            template=facts.template,
            license=facts.license,
            details=ModelDetails.of(facts),
            model_info=facts.info,
            capabilities=capabilities(router, name, facts),
            modified_at=facts.modified_at,
        )


def capabilities(router: ModelRouter, name: str, facts: ModelFacts) -> list[str]:
    """Return what a model does under Ollama's names: embedding alone for a sentence encoder."""
    if router.slots[name].embeds_only:
        return EMBEDDING
    return [*CAPABILITIES, THINKING] if facts.thinks else CAPABILITIES


def served_facts(router: ModelRouter, name: str) -> ModelFacts:
    """Return what a configured model's files say; nothing for a model served by an upstream."""
    slot = router.slots[name]
    return model_facts("" if slot.settings.backend == "openai" else slot.weights_path(), name)


def model_thinks(router: ModelRouter, name: str) -> bool | None:
    """Tell whether a configured model thinks, as its files say; None for one with no file here (an upstream's)."""
    return served_facts(router, name).thinks


def parameter_lines(slot: Slot) -> list[str]:
    """Return the model's default parameters under Ollama's names, one to a line as Ollama shows them."""
    defaults = slot.settings.generation_defaults()
    values: list[tuple[str, Any]] = [
        ("num_predict", defaults.max_new_tokens),
        ("temperature", defaults.temperature if defaults.do_sample else 0),
        ("top_p", defaults.top_p),
        ("top_k", defaults.top_k),
        ("repeat_penalty", defaults.repetition_penalty),
        *(("stop", json.dumps(stop, ensure_ascii=False)) for stop in defaults.stop),
    ]
    return [f"{name:<{PARAMETER_WIDTH}} {value}" for name, value in values]


def expires_at(router: ModelRouter, slot: Slot) -> datetime:
    """Return when an idle model would be unloaded under PALAVER_KEEP_ALIVE (one in use: that long after now)."""
    now, keep = datetime.now(UTC), router.settings.keep_alive
    if keep <= 0:
        return now + FOREVER
    idle = 0.0 if slot.users else time.monotonic() - slot.last_used
    return now + timedelta(seconds=max(0.0, keep - idle))


def loaded_names(router: ModelRouter) -> list[str]:
    """Return the configured models loaded or loading now."""
    return [name for name, slot in router.slots.items() if slot.state in ("ready", "loading")]
