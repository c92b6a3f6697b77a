"""Many models in one server: listed, loaded on first use, served at once, unloaded under a budget or when idle."""

import shutil
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import openai
import pytest
import requests
from helpers import HELLO, model_held
from servers import client_at, procfile_server
from timing import wait_until

from commons import Settings
from palaver.backends import ModelRouter
from palaver.core.embeddings import EmbeddingRequest
from palaver.core.errors import InvalidRequest, ModelNotReady, NotFound, ServerBusy
from palaver.core.requests import GenerationRequest
from palaver.core.types import Reply, final
from palaver.engine.scheduling.turns import StepTurns

NAMES = ["llama", "dialogpt", "blender"]


@pytest.fixture(scope="module")
def three_models(gguf_chat_model, dialogpt_model, blenderbot_small_model) -> str:
    """Three families: a Llama GGUF file on the native step, DialoGPT and Blenderbot through transformers."""
    return f"llama={gguf_chat_model},dialogpt={dialogpt_model},blender={blenderbot_small_model}"


@pytest.fixture(scope="module")
def two_native_models(gguf_chat_model, long_gguf_chat_model) -> str:
    """Two models on the native step: a server starts and loads either in a fraction of a second, without torch."""
    return f"llama={gguf_chat_model},second={long_gguf_chat_model}"


def models_env(models: str, cache, **settings: str) -> dict[str, str]:
    return {
        "PALAVER_MODELS": models,
        "PALAVER_CACHE_DIR": str(cache),
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_MAX_NEW_TOKENS": "8",
        **{f"PALAVER_{name.upper()}": value for name, value in settings.items()},
    }


@contextmanager
def models_server(models: str, cache, **settings: str):
    with procfile_server(models_env(models, cache, **settings), wait_for="/healthz", timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def server(three_models, tmp_path_factory):
    with models_server(three_models, tmp_path_factory.mktemp("models")) as running:
        yield running


def listed(url: str) -> dict[str, dict]:
    return {card["id"]: card for card in requests.get(url + "/v1/models", timeout=120).json()["data"]}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_every_model_is_listed_and_loads_when_first_asked_for(server):
    cards = listed(server.url)
    assert list(cards) == NAMES and cards["llama"]["default"] and not cards["dialogpt"]["default"]
    assert cards["dialogpt"]["state"] == "unloaded" and cards["dialogpt"]["family"] is None
    reply = client(server.url).chat.completions.create(
        model="dialogpt", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.model == "dialogpt" and reply.choices[0].message.content is not None
    cards = listed(server.url)
    assert cards["dialogpt"]["state"] == "ready" and cards["dialogpt"]["family"] == "eos-joined"
    assert cards["dialogpt"]["context_length"] > 0
    one = requests.get(server.url + "/v1/models/blender", timeout=10).json()
    assert one["id"] == "blender" and one["state"] in ("unloaded", "loading", "ready")
    ready = requests.get(server.url + "/readyz", timeout=10).json()
    assert [model["name"] for model in ready["models"]] == NAMES and ready["memory"]["resident_bytes"] > 0


def test_a_request_names_its_model_everywhere_and_an_unknown_one_is_a_404_naming_the_others(server):
    with pytest.raises(openai.NotFoundError) as caught:
        client(server.url).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert all(f"'{name}'" in str(caught.value) for name in NAMES)
    answer = requests.post(server.url + "/api/chat", json={"message": "hi", "model": "nope"}, timeout=60)
    assert answer.status_code == 404 and answer.json()["error"]["param"] == "model"
    answer = requests.post(server.url + "/api/chat", json={"message": "hi", "model": "blender"}, timeout=120)
    assert answer.status_code == 200 and answer.json()["model"] == "blender"
    completion = client(server.url).completions.create(model="llama", prompt="once upon", max_tokens=3)
    assert completion.model == "llama"
    form = requests.post(
        server.url + "/", data={"textbox": "hi", "model": "dialogpt"}, headers={"Accept": "application/json"}
    )
    assert form.status_code == 200 and form.json()["model"] == "dialogpt"


def test_two_models_stream_at_once(server):
    results: dict[str, list] = {}

    def stream(model: str) -> None:
        chunks = client(server.url).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "tell me a story"}], max_tokens=32, stream=True
        )
        results[model] = [(chunk.model, chunk.choices[0].finish_reason) for chunk in chunks if chunk.choices]

    threads = [threading.Thread(target=stream, args=(model,)) for model in ("llama", "dialogpt")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for model in ("llama", "dialogpt"):
        assert results[model] and {name for name, _ in results[model]} == {model}, "every chunk names its model"
        assert results[model][-1][1] in ("stop", "length")


def test_a_conversation_continues_on_its_own_model_after_a_restart(two_native_models, tmp_path):
    database = f"sqlite:///{tmp_path / 'palaver.db'}"
    session = requests.Session()
    with models_server(two_native_models, tmp_path / "cache", database_url=database) as running:
        session.get(running.url + "/", timeout=30)  # the browser's owner cookie: its conversations are listed
        first = session.post(running.url + "/api/chat", json={"message": "hello", "model": "second"}, timeout=120)
        assert first.status_code == 200 and first.json()["model"] == "second"
        conversation = first.json()["conversation_id"]
    with models_server(two_native_models, tmp_path / "cache", database_url=database) as running:
        again = session.post(running.url + "/api/chat", json={"message": "more", "conversation_id": conversation})
        assert again.status_code == 200 and again.json()["model"] == "second", "not the default, llama"
        other = session.post(
            running.url + "/api/chat", json={"message": "x", "conversation_id": conversation, "model": "llama"}
        )
        assert other.status_code == 400 and "runs on 'second'" in other.json()["error"]["message"]
        mine = session.get(running.url + "/api/conversations", params={"model": "second"}).json()["conversations"]
        assert [item["conversation_id"] for item in mine] == [conversation] and mine[0]["model"] == "second"
        assert session.get(running.url + "/api/conversations", params={"model": "llama"}).json()["conversations"] == []
        page = session.get(f"{running.url}/c/{conversation}").text
        assert 'id="model-name"' in page and ">second</span>" in page


def test_keep_alive_unloads_idle_models_and_they_load_again_when_asked(two_native_models, tmp_path):
    with models_server(two_native_models, tmp_path, keep_alive="1s", metrics="1") as running:
        for model in ("llama", "second"):  # the default, and another
            reply = client(running.url).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert reply.model == model
        states = lambda: [listed(running.url)[name]["state"] for name in ("llama", "second")]  # noqa: E731
        wait_until(lambda: states() == ["unloaded", "unloaded"], what="both unloads")
        ready = requests.get(running.url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["state"] == "ready", "the default loads again on demand"
        metrics = requests.get(running.url + "/metrics", timeout=10).text
        assert 'palaver_model_loaded{model="second"} 0.0' in metrics
        client(running.url).chat.completions.create(
            model="second", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        second = requests.get(running.url + "/v1/models/second", timeout=10).json()
        assert second["state"] == "ready"
        described = requests.get(running.url + "/readyz", timeout=10).json()["models"]
        assert next(model for model in described if model["name"] == "second")["loads"] == 2
        metrics = requests.get(running.url + "/metrics", timeout=10).text
        assert 'palaver_model_loads{model="second"} 2.0' in metrics
        assert 'palaver_generated_tokens_total{model="second"}' in metrics


def resident(url: str) -> int:
    return requests.get(url + "/readyz", timeout=10).json()["memory"]["resident_bytes"]


def say(url: str, model: str) -> None:
    answer = requests.post(url + "/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}, timeout=60)
    assert answer.status_code == 200, answer.text


def test_the_least_recently_used_idle_model_is_unloaded_for_another_and_its_memory_returns(large_models, tmp_path):
    models, size = large_models
    small = {"max_batch_size": "2", "max_context_tokens": "256"}  # a KV cache of a few MB beside the weights
    with models_server(models, tmp_path / "a", **small) as running:  # no budget: how much two models take
        say(running.url, "a")
        say(running.url, "b")
        two_loaded = resident(running.url)
    limit = two_loaded + 64 * 2**20 + size // 2  # the headroom the loader keeps, and half a third model
    with models_server(models, tmp_path / "b", memory_limit=str(limit), **small) as running:
        say(running.url, "a")
        say(running.url, "b")
        before = resident(running.url)
        say(running.url, "c")  # a is the least recently used: it goes
        cards = listed(running.url)
        assert [cards[name]["state"] for name in "abc"] == ["unloaded", "ready", "ready"]
        after = resident(running.url)
        assert after - before < size // 2, f"a's {size / 1e6:.0f} MB went back: {before / 1e6:.0f} -> {after / 1e6:.0f}"
        assert after <= limit
        assert "unloading a to make room for c" in running.log()
        say(running.url, "b")
        say(running.url, "a")  # now c is the least recently used
        cards = listed(running.url)
        assert [cards[name]["state"] for name in "abc"] == ["ready", "ready", "unloaded"]


def worker_peak_bytes(server) -> int:
    """Return the peak resident memory of the server's worker (the master's child), from the kernel's count."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def test_one_client_alternating_two_models_costs_only_itself_and_memory_stays_within_the_limit(large_models, tmp_path):
    models, size = large_models
    models = models.rsplit(",", 1)[0]  # a (the default) and b
    small = {"max_batch_size": "4", "max_context_tokens": "256"}
    with models_server(models, tmp_path / "a", **small) as running:  # no budget: what one model takes
        say(running.url, "a")
        one_loaded = resident(running.url)
    limit = one_loaded + 64 * 2**20 + size // 2  # the loader's headroom, and half a second model
    with models_server(models, tmp_path / "b", memory_limit=str(limit), **small) as running:
        say(running.url, "a")
        statuses: dict[str, list[int]] = {"mallory": [], "alice": []}
        mallory, alice = client_at("127.0.0.1"), client_at("127.0.0.2")

        def alternate() -> None:
            for index in range(16):
                body = {"model": "ab"[index % 2], "prompt": "hi", "max_tokens": 1}
                statuses["mallory"].append(mallory.post(running.url + "/v1/completions", json=body, timeout=120))

        attacker = threading.Thread(target=alternate)
        attacker.start()
        while attacker.is_alive():
            body = {"model": "a", "prompt": "hello", "max_tokens": 2}
            statuses["alice"].append(alice.post(running.url + "/v1/completions", json=body, timeout=120))
        attacker.join()
        refusals = [answer.text for answer in statuses["alice"] if answer.status_code != 200]
        assert not refusals, refusals[:3]
        codes = [answer.status_code for answer in statuses["mallory"]]
        assert set(codes) <= {200, 429, 503} and 429 in codes, codes
        refused = [answer.json()["error"] for answer in statuses["mallory"] if answer.status_code == 429]
        assert refused[0]["code"] == "model_switches_exceeded" and "PALAVER_CLIENT_SWITCHES" in refused[0]["message"]
        assert worker_peak_bytes(running) <= limit, f"peak {worker_peak_bytes(running) / 1e6:.0f} MB"
        cards = listed(running.url)
        assert cards["a"]["state"] == "ready" and cards["b"]["state"] in ("ready", "unloaded"), cards
        assert requests.get(running.url + "/readyz", timeout=10).status_code == 200


class RecordedTurns(StepTurns):
    """Step turns that record which thread took each."""

    def __init__(self):
        super().__init__()
        self.takers: list[int] = []

    @contextmanager
    def turn(self):
        with super().turn():
            self.takers.append(threading.get_ident())
            yield


def test_models_waiting_for_a_turn_take_it_in_the_order_they_asked(make_settings, gguf_chat_model, qwen2_gguf_model):
    """First come, first served across models: a model that has just stepped queues behind one already waiting."""
    settings = make_settings(models=f"one={gguf_chat_model},two={qwen2_gguf_model}")
    router = ModelRouter(settings)
    router.turns = turns = RecordedTurns()  # before any engine is made: each is given the router's turns
    try:
        assert router.wait_ready(60, "one") and router.wait_ready(60, "two")
        params = replace(settings.generation_defaults(), max_new_tokens=40)
        with turns.turn():  # held: both models' first steps queue behind it
            streams = [router.stream(GenerationRequest(params, prompt="a story", model=m)) for m in ("one", "two")]
            for stream in streams:
                next(stream)
            wait_until(lambda: len(turns._queue) == 2, what="both models waiting for a turn")
        replies = [final(stream, Reply) for stream in streams]
        engines = {router.loaded(name)._worker.ident: name for name in ("one", "two")}
    finally:
        router.close()
    takers = [engines.get(ident, "test") for ident in turns.takers]
    assert takers[0] == "test" and set(takers[1:3]) == {"one", "two"}, f"one turn each, in order: {takers[:8]}"
    assert all(reply.usage.completion_tokens > 0 for reply in replies)
    assert takers.count("one") > 1 and takers.count("two") > 1


def test_the_pending_bound_holds_for_the_server_whichever_model_a_request_names(
    make_settings, gguf_chat_model, qwen2_gguf_model
):
    settings = make_settings(models=f"one={gguf_chat_model},two={qwen2_gguf_model}", max_pending=1)
    router = ModelRouter(settings)
    params = settings.generation_defaults()
    try:
        held = router.stream(GenerationRequest(params, prompt="hi", model="one"))
        next(held)  # one request in flight, on one
        with pytest.raises(ServerBusy):  # another model is no way round PALAVER_MAX_PENDING
            router.generate(GenerationRequest(params, prompt="hi", model="two"))
        with pytest.raises(ServerBusy), router.waiting():  # nor is waiting for a conversation's turn
            pass
        with pytest.raises(ServerBusy):  # nor an embedding
            router.embed(EmbeddingRequest(["hi"], model="two"))
        assert final(held, Reply) and router.pending == 0
        with pytest.raises(ServerBusy):  # a place for each input: two of them are two requests' worth
            router.embed(EmbeddingRequest(["a", "b"], model="two"))
        assert router.describe()["requests"]["refused_busy"] == 4
        assert len(router.embed(EmbeddingRequest(["hi"], model="two")).vectors) == 1 and router.pending == 0
        assert router.generate(GenerationRequest(params, prompt="hi", model="two")).usage.completion_tokens > 0
    finally:
        router.close()


def test_a_request_is_admitted_once_so_a_departed_clients_place_is_free_at_once(make_router, chat_model):
    router = make_router(chat_model, max_pending=1)
    assert router.wait_ready(30)
    params = router.settings.generation_defaults()
    with model_held(router.loaded().model.family.model) as (busy, release):
        left = router.stream(GenerationRequest(params, messages=HELLO))
        next(left)
        assert busy.wait(10)
        with pytest.raises(ServerBusy):  # the server's one bound holds
            router.generate(GenerationRequest(params, messages=HELLO))
        left.close()  # its client left; the engine winds it down at its next step, once the model is free
        assert router.pending == 0 and router.loaded().pending == 1
        following = router.stream(GenerationRequest(params, messages=HELLO))
        assert next(following).prompt_tokens > 0, "no second bound, the engine's, refuses it"
        release.set()
        assert final(following, Reply).usage.completion_tokens > 0
    assert router.describe()["requests"]["refused_busy"] == 1 and router.pending == 0


def test_a_model_that_failed_to_load_is_tried_again_after_a_back_off_and_the_default_stays_served(
    make_settings, gguf_chat_model, tmp_path
):
    later = tmp_path / "later.gguf"  # not there yet: its first load fails
    settings = make_settings(models=f"small={gguf_chat_model},later={later}")
    router = ModelRouter(settings)
    params = settings.generation_defaults()
    try:
        with pytest.raises(ModelNotReady, match="failed to load"):
            router.generate(GenerationRequest(params, prompt="hi", model="later"))
        card = router.describe_model("later")
        assert card["state"] == "failed" and 0 < card["retry_in_seconds"] <= 1 and card["loads"] == 1
        with pytest.raises(ModelNotReady, match=r"tried again in \d+ s") as caught:
            router.generate(GenerationRequest(params, prompt="hi", model="later"))
        assert caught.value.retry_after >= 1 and router.describe_model("later")["loads"] == 1, "no load in back-off"
        assert router.generate(GenerationRequest(params, prompt="hi", model="small")).usage.completion_tokens > 0
        shutil.copy(gguf_chat_model, later)  # the operator mends the file: the next try after the back-off loads it
        wait_until(lambda: router.describe_model("later")["retry_in_seconds"] == 0, timeout=30, what="the back-off")
        assert router.generate(GenerationRequest(params, prompt="hi", model="later")).usage.completion_tokens > 0
        assert router.describe_model("later")["state"] == "ready" and router.slots["later"].failures == 0
    finally:
        router.close()


def test_names_and_sources_resolve_and_others_are_named_in_the_404(make_settings, gguf_chat_model):
    router = ModelRouter(make_settings(models=f"small={gguf_chat_model},{gguf_chat_model}"))
    try:
        assert router.names == ["small", "chat-llama"] and router.resolve(None) == "small"
        assert router.resolve(str(gguf_chat_model)) == "small", "a source as written means its first name"
        with pytest.raises(NotFound, match="serves 'small', 'chat-llama'"):
            router.resolve("big")
        with pytest.raises(NotFound) as caught:
            router.resolve("x" * 100_000 + "\ud800")
        assert len(caught.value.message) < 300, "a name is echoed shortened, never a whole body"
        assert ModelRouter(Settings(cache_dir=router.settings.cache_dir)).names == ["SmolLM2-135M-Instruct"]
    finally:
        router.close()


def test_a_generation_asked_of_a_model_that_only_embeds_is_a_400_naming_it_that_loads_nothing(
    make_settings, gguf_chat_model, sentence_bert_model
):
    router = ModelRouter(make_settings(models=f"small={gguf_chat_model},bert={sentence_bert_model}"))
    try:
        params = router.settings.generation_defaults()
        with pytest.raises(InvalidRequest, match="the model 'bert' only embeds") as refused:
            router.generate(GenerationRequest(params, prompt="hi", model="bert"))
        assert refused.value.param == "model" and refused.value.code == "model_only_embeds"
        assert router.describe_model("bert")["state"] == "unloaded" and router.pending == 0, "told from its files"
        assert [router.describe_model(name)["embeds_only"] for name in router.names] == [False, True]
        assert len(router.embed(EmbeddingRequest(["hi"], model="bert")).vectors) == 1
    finally:
        router.close()
