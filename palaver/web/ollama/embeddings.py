"""Ollama's embeddings: /api/embed (a text or a list, cut to the context by default) and the older /api/embeddings."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from palaver.core.embeddings import MAX_EMBEDDING_INPUTS, EmbeddingRequest, Embeddings
from palaver.core.validation import RequestModel, body_error, field_error
from palaver.web.connection import client_gone_probe
from palaver.web.generations import embed_all
from palaver.web.ollama.options import KeepAlive, Options
from palaver.web.ollama.response_schemas import nanoseconds
from palaver.web.services import services

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

MODEL_FIELD = Field(description="A model this server serves (see /ollama/api/tags), by name or by source.")
OPTIONS_FIELD = Field(None, description="Ollama's options: accepted as on /api/generate; none changes a vector.")


def ollama_inputs(value: Any) -> list[str]:
    """Accept a text or a list of up to MAX_EMBEDDING_INPUTS texts, none empty in a list; "" or [] is none at all."""
    texts = ([value] if value else []) if isinstance(value, str) else value
    if not isinstance(texts, list) or len(texts) > MAX_EMBEDDING_INPUTS or not all(isinstance(t, str) for t in texts):
        raise field_error(f"must be a string or a list of at most {MAX_EMBEDDING_INPUTS} strings")
    empty = next((index for index, text in enumerate(texts) if not text), None)
    if empty is not None:
        raise body_error(f"'input[{empty}]' is empty: every input needs a text to embed", f"input[{empty}]")
    return texts


class EmbedRequest(RequestModel):
    """POST /ollama/api/embed: texts to embed; no input loads the model (with keep_alive 0, unloads it)."""

    model: str = MODEL_FIELD
    input: Annotated[list[str], BeforeValidator(ollama_inputs)] = Field(
        default_factory=list, description="A text or a list of texts: each becomes one vector, in order."
    )
    truncate: bool = Field(True, description="Cut an input past the model's context to fit it; false refuses it.")
    dimensions: int | None = Field(None, ge=1, description="The vectors' size: only the model's own is served.")
    options: Options | None = OPTIONS_FIELD
    keep_alive: KeepAlive = None

    @property
    def unloads_after(self) -> bool:
        """Tell whether keep_alive 0 asks for the model to be unloaded once this request is done."""
        return self.keep_alive == 0

    def embedding_request(self, model: str) -> EmbeddingRequest:
        return EmbeddingRequest(
            self.input, model=model, truncate=self.truncate, dimensions=self.dimensions, client_gone=client_gone_probe()
        )


class EmbeddingsRequest(RequestModel):
    """POST /ollama/api/embeddings, Ollama's older endpoint: one prompt; none loads the model."""

    model: str = MODEL_FIELD
    prompt: str = Field("", description="The text to embed; it must fit the model's context.")
    options: Options | None = OPTIONS_FIELD
    keep_alive: KeepAlive = None

    @property
    def unloads_after(self) -> bool:
        return self.keep_alive == 0

    def embedding_request(self, model: str) -> EmbeddingRequest:
        texts = [self.prompt] if self.prompt else []
        return EmbeddingRequest(texts, model=model, param="prompt", client_gone=client_gone_probe())


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0


class EmbeddingResponse(BaseModel):
    embedding: list[float]


def timed_embeddings(router: ModelRouter, request: EmbeddingRequest, param: str) -> EmbedResponse:
    """Embed the request's inputs (none: only load the model), timing the load apart, as Ollama reports it."""
    model = request.model or router.default
    started, loading = time.monotonic(), router.slots[model].state != "ready"
    router.model_limits(services().settings.load_wait, model)  # loaded and ready, or a 503 while it loads
    loaded = time.monotonic()
    embeddings = embed_all(request, router, param) if request.inputs else Embeddings([], 0)
    return EmbedResponse(
        model=router.public_name(model),
        embeddings=embeddings.vectors,
        total_duration=nanoseconds(time.monotonic() - started),
        load_duration=nanoseconds(loaded - started) if loading else 0,
        prompt_eval_count=embeddings.prompt_tokens,
    )
