"""The backend protocol: what the chat service, the web layer and the command line ask of whatever generates."""

from __future__ import annotations

from typing import Any, Protocol

from palaver.core.embeddings import EmbeddingRequest, Embeddings
from palaver.core.requests import GenerationRequest
from palaver.core.types import ModelLimits, Reply, ReplyEvents


class Backend(Protocol):
    """Generate replies for queued requests: the engine in this process, or an upstream server.

    A backend bounds nothing: the router in front of the backends admits each request once.
    """

    @property
    def state(self) -> str:
        """Return 'idle', 'loading', 'ready' or 'failed'."""
        ...

    @property
    def model_name(self) -> str:
        """Return the served model's name as clients see it."""
        ...

    @property
    def pending(self) -> int:
        """Return the requests queued or generating on it."""
        ...

    @property
    def load_seconds(self) -> float:
        """Return how long the model took to become ready."""
        ...

    def start(self) -> None:
        """Start getting ready in the background (loading, or looking the upstream model up)."""

    def wait_ready(self, timeout: float) -> bool:
        """Start getting ready if needed and wait up to timeout seconds; return whether it is ready."""
        ...

    def model_limits(self, timeout: float) -> ModelLimits:
        """Return the model's family and token limits, waiting up to timeout seconds for it; 503 if not ready."""
        ...

    def describe(self) -> dict[str, Any]:
        """Describe the model and the backend's state without blocking, for /readyz and the page."""
        ...

    def tokenize(self, request: GenerationRequest) -> list[int]:
        """Return the token ids the model would be fed for request, as generating it would build them."""
        ...

    def detokenize(self, token_ids: list[int]) -> str:
        """Return the text of token ids, or raise InvalidRequest naming 'tokens' for ids the model lacks."""
        ...

    def stream(self, request: GenerationRequest) -> ReplyEvents:
        """Queue a request; yield its PromptInfo, its text as it comes, then its Reply."""
        ...

    def generate(self, request: GenerationRequest) -> Reply:
        """Queue a request and wait for its whole reply."""
        ...

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Return each input's embedding: its final hidden states, mean-pooled, as a unit vector."""
        ...

    def close(self) -> None:
        """Stop serving after the requests already queued."""
