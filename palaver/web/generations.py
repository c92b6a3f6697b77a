"""A request's generations (or inputs to embed): queued as rows of its client's share, closed however it ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import g

from palaver.backends import Backend
from palaver.core.embeddings import EmbeddingRequest, Embeddings
from palaver.core.requests import GenerationRequest
from palaver.core.types import PromptInfo, ReplyEvents
from palaver.web.caller import hold_rows

TRUNCATED_HEADER = "X-Palaver-Truncated-Turns"  # how many of the oldest turns the prompt left out


@contextmanager
def closing_all(streams: list[ReplyEvents]) -> Iterator[None]:
    """Close every stream on the way out, finished or not, so no request generates on for nobody."""
    try:
        yield
    finally:
        for stream in streams:
            stream.close()


def start_all(requests: list[GenerationRequest], engine: Backend, param: str) -> tuple[list[ReplyEvents], PromptInfo]:
    """Queue every request before waiting on any, so they are generated in one batch; return the first's info.

    Each is a row of the client's share, as a request of its own would be: param names what multiplied them.
    """
    hold_rows(len(requests), param)
    streams: list[ReplyEvents] = []
    try:
        for request in requests:
            streams.append(engine.stream(request))
        infos = [next(stream) for stream in streams]  # each returns once its request has joined
    except BaseException:
        for stream in streams:
            stream.close()  # a refused request cancels the ones queued with it
        raise
    info = infos[0]
    assert isinstance(info, PromptInfo)  # a stream starts with its prompt's size
    return streams, info


def embed_all(request: EmbeddingRequest, engine: Backend, param: str) -> Embeddings:
    """Embed a request's inputs, each a row of the client's share as a prompt of a list is; param names the list."""
    hold_rows(len(request.inputs), param)
    embeddings = engine.embed(request)
    tally = g.get("tokens")  # the request log's count of the tokens the model read
    if tally is not None:
        tally["prompt_tokens"] += embeddings.prompt_tokens
    return embeddings
