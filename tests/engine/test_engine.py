"""The engine: lazy load-once, the worker queue, load failures, timeouts and generation failures."""

import threading

import pytest
from helpers import model_held, raising

from commons import Message, Settings
from palaver.core.errors import GenerationFailed, GenerationTimeout, ModelNotReady, ServerBusy
from palaver.core.parameters import Sampling
from palaver.engine.engine import Engine, GenerationRequest
from palaver.engine.loading import load_model

HELLO = [Message("user", "hello there")]


def ask(engine: Engine, **overrides):
    """Generate a reply to HELLO with the engine's default parameters."""
    params = Sampling.parse(overrides).applied_to(engine.settings.generation_defaults())
    return engine.generate(GenerationRequest(params, messages=HELLO))


def counting_loader(calls: list, gate: threading.Event | None = None):
    """Wrap the real loader to count calls, optionally holding the load until gate is set."""

    def load(settings: Settings):
        calls.append(threading.current_thread().name)
        if gate is not None:
            gate.wait(30)
        return load_model(settings)

    return load


def test_model_loads_lazily_and_only_once_under_concurrent_requests(make_settings, chat_model):
    calls: list = []
    engine = Engine(make_settings(chat_model), loader=counting_loader(calls))
    assert engine.state == "idle" and calls == []
    replies, errors = [], []

    def ask_once():
        try:
            replies.append(ask(engine))
        except Exception as exc:  # collected, so the assertion shows it
            errors.append(exc)

    threads = [threading.Thread(target=ask_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.close()
    assert errors == [] and len(replies) == 8
    assert calls == ["palaver-engine"], "loaded once, on the engine's thread, never on a request thread"
    assert len({reply.text for reply in replies}) == 1 and engine.state == "ready"


def test_requests_wait_for_a_loading_model_then_get_503_with_retry_after(make_settings, chat_model):
    gate = threading.Event()
    engine = Engine(make_settings(chat_model, load_wait=0.2), loader=counting_loader([], gate))
    with pytest.raises(ModelNotReady) as caught:
        ask(engine)
    assert caught.value.status == 503 and caught.value.retry_after > 0
    assert engine.state == "loading" and "loading" in caught.value.message
    gate.set()
    assert engine.wait_ready(30)
    assert ask(engine).usage.completion_tokens > 0
    engine.close()


def test_a_model_that_fails_to_load_logs_why_and_is_retried(make_engine, tmp_path, caplog):
    engine = make_engine(tmp_path / "no-such-model")
    with pytest.raises(ModelNotReady) as caught:
        ask(engine)
    assert "failed to load" in caught.value.message and "no-such-model" not in caught.value.message
    assert "no model directory" in caplog.text and engine.state == "failed" and "error" not in engine.describe()
    first_worker = engine._worker
    with pytest.raises(ModelNotReady):
        ask(engine)
    assert engine._worker is not first_worker, "a later request tries loading again"


def test_a_slow_generation_times_out_is_cancelled_and_the_engine_carries_on(make_engine, chat_model):
    engine = make_engine(chat_model, request_timeout=0.3)
    assert engine.wait_ready(30)
    request = GenerationRequest(engine.settings.generation_defaults(), messages=HELLO)
    with model_held(engine.model.family.model):  # stands in for a generation that outlives the timeout
        with pytest.raises(GenerationTimeout) as caught:
            engine.generate(request)
    assert caught.value.status == 504 and "0.3 seconds" in caught.value.message
    assert request.cancelled.is_set()
    assert ask(engine).finish_reason in ("stop", "length")


def test_a_failing_generation_is_a_generic_error_and_is_logged(make_engine, chat_model, caplog):
    engine = make_engine(chat_model)
    assert engine.wait_ready(30)
    model = engine.model.family.model
    model.forward = raising(RuntimeError("secret internal detail"))
    with pytest.raises(GenerationFailed) as caught:
        ask(engine)
    del model.forward
    assert "secret" not in caught.value.message
    assert "secret internal detail" in caplog.text
    assert ask(engine).usage.prompt_tokens > 0


def test_describe_reports_the_model_and_its_limits(make_engine, chat_model):
    engine = make_engine(chat_model, max_context_tokens=128)
    assert engine.describe() == {"state": "idle", "pending": 0, "requests": {}}
    engine.wait_ready(30)
    description = engine.describe()
    assert description["state"] == "ready" and description["family"] == "chat-template"
    assert description["context_tokens"] == 128 and description["name"] == "chat-llama"


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
        waiter.join(5)
        first.join(5)
    assert not waiter.is_alive() and replies[0].finish_reason == "cancelled" and replies[0].text == ""


def test_requests_past_the_pending_bound_get_429_and_the_bound_frees_up(make_engine, chat_model):
    engine = make_engine(chat_model, max_pending=1)
    assert engine.wait_ready(30)
    with model_held(engine.model.family.model) as (busy, release):
        first = threading.Thread(target=ask, args=(engine,))
        first.start()
        assert busy.wait(10) and engine.pending == 1
        with pytest.raises(ServerBusy) as caught:
            ask(engine)
        release.set()
        first.join(10)
    assert caught.value.status == 429 and caught.value.retry_after > 0 and "try again" in caught.value.message
    assert engine.pending == 0 and ask(engine).usage.completion_tokens > 0
    assert engine.describe()["requests"]["refused_busy"] == 1


def test_a_failing_native_step_fails_its_rows_frees_their_pages_and_the_engine_carries_on(
    make_engine, gguf_chat_model, caplog
):
    engine = make_engine(gguf_chat_model)
    assert engine.wait_ready(30) and engine.describe()["engine"] == "native"
    cache = engine.model.family.model.cache
    cache.step = raising(RuntimeError("secret native detail"))  # the instance's step, in place of the class's
    with pytest.raises(GenerationFailed) as caught:
        ask(engine)
    del cache.step
    assert "secret" not in caught.value.message and "secret native detail" in caplog.text
    assert cache.used_pages == 0, "the failed batch's rows gave their pages back"
    assert ask(engine).usage.completion_tokens > 0
