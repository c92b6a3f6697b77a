"""A request's generations: queued together as rows of the client's share, closed however the answer ends."""

import pytest
from flask import g

from palaver.core.embeddings import EmbeddingRequest
from palaver.core.errors import InvalidRequest, PalaverError
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message, Reply, final
from palaver.web.generations import closing_all, embed_all, start_all


def requests_for(app, *prompts: str) -> list[GenerationRequest]:
    params = app.extensions["palaver"].settings.generation_defaults()
    return [GenerationRequest(params, messages=[Message("user", prompt)]) for prompt in prompts]


def test_every_request_is_queued_before_any_is_read_and_each_is_answered(make_app, chat_model):
    app = make_app(chat_model, max_new_tokens=2)
    with app.test_request_context():
        g.caller = "address:127.0.0.1"
        streams, info = start_all(requests_for(app, "hi", "hello there " * 5), app.extensions["palaver"].backend, "n")
        with closing_all(streams):
            replies = [final(stream, Reply) for stream in streams]
    assert info.prompt_tokens == replies[0].usage.prompt_tokens < replies[1].usage.prompt_tokens


def test_a_refused_request_cancels_the_ones_queued_with_it(make_app, chat_model):
    app = make_app(chat_model, max_context_tokens=64)
    requests = requests_for(app, "hi", "hello there " * 60)
    with app.test_request_context(), pytest.raises(PalaverError):
        g.caller = "address:127.0.0.1"
        start_all(requests, app.extensions["palaver"].backend, "n")
    assert requests[0].cancelled.is_set()


def test_more_rows_than_a_client_may_hold_is_a_400_naming_what_multiplied_them(make_app, chat_model):
    app = make_app(chat_model, client_share=2)
    with app.test_request_context(), pytest.raises(InvalidRequest) as caught:
        g.caller = "address:127.0.0.1"
        start_all(requests_for(app, "a", "b", "c"), app.extensions["palaver"].backend, "prompt")
    assert caught.value.param == "prompt" and "PALAVER_CLIENT_SHARE" in caught.value.message


def test_inputs_to_embed_are_rows_of_the_share_and_their_tokens_are_logged(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, client_share=2)
    router = app.extensions["palaver"].backend
    with app.test_request_context(), pytest.raises(InvalidRequest) as caught:
        g.caller = "address:127.0.0.1"
        embed_all(EmbeddingRequest(["a", "b", "c"]), router, "input")
    assert caught.value.param == "input" and "PALAVER_CLIENT_SHARE" in caught.value.message
    with app.test_request_context():
        g.caller, g.tokens = "address:127.0.0.1", {"prompt_tokens": 0, "completion_tokens": 0}
        embeddings = embed_all(EmbeddingRequest(["a", "b"]), router, "input")
        assert len(embeddings.vectors) == 2 and g.tokens["prompt_tokens"] == embeddings.prompt_tokens > 0


def test_closing_all_closes_every_stream_even_on_an_error():
    closed = []

    def stream(name):
        try:
            yield name
        finally:
            closed.append(name)

    streams = [stream("a"), stream("b")]
    next(streams[0])
    with pytest.raises(RuntimeError), closing_all(streams):
        raise RuntimeError("mid-answer")
    assert closed == ["a"], "a stream never started has nothing to close; a started one is closed"
