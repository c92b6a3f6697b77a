"""An embedding request as its caller makes it (texts or token ids, on which model, for whom), and its answer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from palaver.core.errors import InvalidRequest
from palaver.core.types import CALLER, Caller, CallersRequest

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's bound on one request's inputs


@dataclass(eq=False)  # a request is itself: compared and hashed by identity
class EmbeddingRequest(CallersRequest):
    """Texts, or lists of token ids, to embed; each becomes one vector, in order."""

    inputs: Sequence[str | Sequence[int]]  # as the boundary checked them: none empty, ids not held to a vocabulary
    model: str | None = None  # the configured model's name, as the router resolved it; None: the default
    truncate: bool = False  # cut an input past the model's context to fit it (Ollama's way); else it is refused
    dimensions: int | None = None  # the vector's size the caller asks for; None: the model's own
    param: str = "input[{index}]"  # how a refusal names an input, by its index ("prompt" where there is one)
    client_gone: Callable[[], bool] | None = None
    caller: Caller = field(default_factory=CALLER.get)  # whose request it is, as the view that made it knew
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Embeddings:
    """One unit-length vector per input, in the inputs' order, and the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int  # every input's tokens, after any truncation: what the model read


def only_embeds(model: str) -> InvalidRequest:
    """Refuse a generation asked of a model that only embeds (a sentence encoder), naming the model."""
    return InvalidRequest(
        f"the model '{model}' only embeds: it generates no text; send its inputs to /v1/embeddings "
        "(or Ollama's /api/embed)",
        param="model",
        code="model_only_embeds",
    )
