"""The engine: lazy load-once, the worker queue, load failures, timeouts and generation failures."""

import threading

import pytest
from helpers import HELLO, ask, model_held
from timing import wait_until

from commons import Settings
from palaver.core.embeddings import EmbeddingRequest
from palaver.core.errors import GenerationTimeout, InvalidRequest, ModelNotReady
from palaver.core.types import Reply, final
from palaver.engine.engine import Engine, GenerationRequest
from palaver.engine.torch.loading import load_model


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


def test_describe_reports_the_model_and_its_limits(make_engine, chat_model):
    engine = make_engine(chat_model, max_context_tokens=128)
    assert engine.describe() == {"state": "idle", "pending": 0, "requests": {}}
    engine.wait_ready(30)
    description = engine.describe()
    assert description["state"] == "ready" and description["family"] == "chat-template"
    assert description["context_tokens"] == 128 and description["name"] == "chat-llama"


def test_the_engine_counts_its_requests_and_refuses_none_the_router_admits_them(make_engine, chat_model):
    engine = make_engine(chat_model, max_pending=1)
    assert engine.wait_ready(30)
    with model_held(engine.model.family.model) as (busy, release):
        first = threading.Thread(target=ask, args=(engine,))
        first.start()
        assert busy.wait(10) and engine.pending == 1
        second = engine.stream(GenerationRequest(engine.settings.generation_defaults(), messages=HELLO))
        assert next(second).prompt_tokens > 0, "queued past PALAVER_MAX_PENDING: the bound is the router's"
        assert engine.pending == 2
        release.set()
        first.join(10)
        assert final(second, Reply).usage.completion_tokens > 0
    wait_until(lambda: engine.pending == 0, 10, "every request counted out")
    assert "refused_busy" not in engine.describe()["requests"]


def test_a_model_that_only_embeds_refuses_a_generation_once_loaded_naming_it(make_engine, sentence_bert_model):
    engine = make_engine(sentence_bert_model)  # the engine reads no files: it knows once its family is loaded
    with pytest.raises(InvalidRequest, match=f"'{engine.name}' only embeds") as refused:
        ask(engine)
    assert refused.value.param == "model" and engine.state == "ready" and engine.pending == 0
    assert engine.describe()["family"] == "sentence-encoder" and engine.describe()["max_reply_tokens"] == 0
    assert len(engine.embed(EmbeddingRequest(["hello there"])).vectors[0]) == 32, "while it embeds"
