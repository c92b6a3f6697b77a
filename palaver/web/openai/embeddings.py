"""POST /v1/embeddings, with OpenAI's shapes: texts or token ids in, unit vectors out, as floats or base64."""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from palaver.core.embeddings import MAX_EMBEDDING_INPUTS, EmbeddingRequest, Embeddings
from palaver.core.validation import RequestModel, body_error, field_error
from palaver.web.api.schemas import named_model
from palaver.web.connection import client_gone_probe
from palaver.web.generations import embed_all
from palaver.web.services import services

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

INPUT_SHAPES = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


def is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def embedding_inputs(value: Any) -> list[str] | list[list[int]]:
    """Accept one text or token list, or a list of 1 to MAX_EMBEDDING_INPUTS of one kind; none of them empty."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(is_token(item) for item in value)):
        value = [value]  # one text, or one list of token ids
    if not isinstance(value, list) or not 0 < len(value) <= MAX_EMBEDDING_INPUTS:
        raise field_error(f"must be {INPUT_SHAPES}, of 1 to {MAX_EMBEDDING_INPUTS} inputs")
    texts = all(isinstance(item, str) for item in value)
    if not texts and not all(isinstance(item, list) and all(is_token(t) for t in item) for item in value):
        raise field_error(f"must be {INPUT_SHAPES}, all of one kind")
    empty = next((index for index, item in enumerate(value) if not item), None)
    if empty is not None:
        raise body_error(f"'input[{empty}]' is empty: every input needs a text or a token to embed", f"input[{empty}]")
    return value


class CreateEmbeddingRequest(RequestModel):
    """POST /v1/embeddings: the inputs, the model, and how the vectors are written."""

    model: str | None = None
    input: Annotated[list[str] | list[list[int]], BeforeValidator(embedding_inputs)] = Field(
        description=f"{INPUT_SHAPES[0].upper()}{INPUT_SHAPES[1:]}: each becomes one vector, in order."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes."
    )
    dimensions: int | None = Field(None, ge=1, description="The vectors' size: only the model's own is served.")
    user: str | None = Field(None, description="An end user's id, as OpenAI takes it; Palaver keeps none.")

    def served_model(self, models: ModelRouter) -> str:
        """Return the configured model's name the request names (or its source as written); 404 for any other."""
        return named_model(models, self.model)


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def of(cls, model: str, embeddings: Embeddings, encoding_format: str) -> CreateEmbeddingResponse:
        encode = base64_floats if encoding_format == "base64" else list
        data = [EmbeddingObject(index=i, embedding=encode(vector)) for i, vector in enumerate(embeddings.vectors)]
        tokens = embeddings.prompt_tokens
        return cls(data=data, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def base64_floats(vector: list[float]) -> str:
    """Write a vector as OpenAI does for encoding_format=base64: its float32 values' little-endian bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def serve_embeddings(given: CreateEmbeddingRequest) -> dict[str, Any]:
    """Embed every input, each a row of the client's share, and answer with OpenAI's list of vectors."""
    router = services().backend
    model = given.served_model(router)
    request = EmbeddingRequest(given.input, model=model, dimensions=given.dimensions, client_gone=client_gone_probe())
    embeddings = embed_all(request, router, "input")
    return CreateEmbeddingResponse.of(router.public_name(model), embeddings, given.encoding_format).model_dump()
