"""The worker loop: cancelled requests leave at once, a failing step fails only its rows, the loop carries on, and
each step's deltas reach their callers in order."""

import threading
from dataclasses import replace

import pytest
from helpers import HELLO, ask, model_held, raising
from timing import budget

from palaver.core.errors import GenerationFailed
from palaver.core.types import Reply, TokenLogprob
from palaver.engine.engine import GenerationRequest


def test_a_failing_generation_is_a_generic_error_and_is_logged(make_engine, chat_model, caplog):
    engine = make_engine(chat_model)
    assert engine.wait_ready(30)
    model = engine.model.family.model.module
    model.forward = raising(RuntimeError("secret internal detail"))
    with pytest.raises(GenerationFailed) as caught:
        ask(engine)
    del model.forward
    assert "secret" not in caught.value.message
    assert "secret internal detail" in caplog.text
    assert ask(engine).usage.prompt_tokens > 0


def test_a_request_cancelled_while_queued_finishes_at_once(make_engine, chat_model):
    engine = make_engine(chat_model, max_batch_size=1)
    assert engine.wait_ready(30)
    params = engine.settings.generation_defaults()
    with model_held(engine.model.family.model) as (busy, release):
        first = threading.Thread(target=engine.generate, args=(GenerationRequest(params, messages=HELLO),))
        first.start()
        assert busy.wait(10)
        queued = GenerationRequest(params, messages=HELLO)
        replies = []
        waiter = threading.Thread(target=lambda: replies.append(engine.generate(queued)))
        waiter.start()
        queued.cancel()
        release.set()
        waiter.join(budget(5))
        first.join(budget(5))
    assert not waiter.is_alive() and replies[0].finish_reason == "cancelled" and replies[0].text == ""


def test_a_failing_native_step_fails_its_rows_frees_their_pages_and_the_engine_carries_on(
    make_engine, gguf_chat_model, caplog
):
    engine = make_engine(gguf_chat_model)
    assert engine.wait_ready(30) and engine.describe()["engine"] == "native"
    cache = engine.model.family.model.cache
    cache.step_rows = raising(RuntimeError("secret native detail"))  # the instance's, in place of the class's
    with pytest.raises(GenerationFailed) as caught:
        ask(engine)
    del cache.step_rows
    assert "secret" not in caught.value.message and "secret native detail" in caplog.text
    assert cache.used_pages == 0, "the failed batch's rows gave their pages back"
    assert ask(engine).usage.completion_tokens > 0


def test_an_unloaded_engine_frees_its_pages_and_its_worker_ends(make_engine, gguf_chat_model):
    engine = make_engine(gguf_chat_model)
    assert engine.wait_ready(30) and ask(engine).usage.completion_tokens > 0
    worker = engine._worker
    assert engine.kv_bytes()[0] > 0
    engine.unload()
    assert not worker.is_alive() and engine.model is None and engine.kv_bytes() == (0, 0)


def test_a_steps_text_and_logprobs_reach_the_caller_in_order_and_before_its_end(make_engine, gguf_chat_model):
    """Deltas are handed on after each step's rows are chosen, not as each is: their order and the end's must hold."""
    engine = make_engine(gguf_chat_model)
    assert engine.wait_ready(30)
    params = replace(engine.settings.generation_defaults(), logprobs=2, max_new_tokens=12, temperature=0.9, seed=3)
    requests = [GenerationRequest(params, messages=HELLO) for _ in range(3)]
    events: list[list] = [[] for _ in requests]
    threads = [
        threading.Thread(target=lambda n=n: events[n].extend(engine.stream(requests[n]))) for n in range(len(requests))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(budget(30))
    for stream in events:
        reply = stream[-1]
        assert isinstance(reply, Reply) and not any(isinstance(item, Reply) for item in stream[:-1])
        entries = [item for item in stream if isinstance(item, TokenLogprob)]
        assert "".join(item for item in stream if isinstance(item, str)) == reply.text
        assert len(entries) == len(reply.logprobs or []) > 0
        first_text = next((i for i, item in enumerate(stream) if isinstance(item, str) and item), len(stream))
        assert any(isinstance(item, TokenLogprob) for item in stream[:first_text]), "a token's logprob, then its text"
