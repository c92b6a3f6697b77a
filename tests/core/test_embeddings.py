"""An embedding request as its caller makes it, and the vectors that answer it."""

import threading

import pytest

from palaver.core.embeddings import EmbeddingRequest, Embeddings
from palaver.core.types import CALLER, Caller


def test_a_request_belongs_to_the_caller_that_made_it_and_names_its_inputs_by_index():
    assert EmbeddingRequest(["x"]).client == "", "outside a request, the caller is nobody"
    token = CALLER.set(Caller("key:abc"))
    try:
        made = EmbeddingRequest(["x"])
    finally:
        CALLER.reset(token)
    assert made.client == "key:abc" and EmbeddingRequest(["y"]).client == ""
    assert made.param.format(index=3) == "input[3]" and not made.truncate and made.dimensions is None
    assert EmbeddingRequest(["x"], param="prompt").param.format(index=0) == "prompt"


def test_a_request_is_cancelled_by_its_flag_and_is_itself():
    request = EmbeddingRequest([[1, 2]])
    assert request != EmbeddingRequest([[1, 2]]) and isinstance(request.cancelled, threading.Event)
    request.cancel()
    assert request.cancelled.is_set()


def test_embeddings_are_frozen():
    answer = Embeddings([[1.0, 0.0]], 3)
    with pytest.raises(AttributeError):
        answer.prompt_tokens = 4  # type: ignore[misc]
