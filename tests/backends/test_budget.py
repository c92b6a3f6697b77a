"""The memory budget: idle models make room, least recently used first; models in use never do."""

import threading

import pytest
from helpers import one_model_at_a_time
from timing import wait_until

from commons import Settings
from palaver.backends import ModelRouter
from palaver.backends.budget import MemoryBudget
from palaver.backends.model_list import ModelEntry
from palaver.backends.slot import Slot
from palaver.core.errors import ModelNotReady
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message, Reply, final
from palaver.engine.engine import Engine
from palaver.engine.machine import HEADROOM_BYTES, resident_bytes


class Loaded:
    """A loaded backend as the budget sees one: its state and requests in flight."""

    state, pending = "ready", 0


def slot(name: str, path, last_used: float, users: int = 0) -> Slot:
    return Slot(ModelEntry(name, str(path)), Settings(model=str(path)), Loaded(), users, last_used)  # type: ignore[arg-type]


def test_the_least_recently_used_idle_models_go_first_and_only_as_many_as_needed(large_models):
    models, size = large_models
    paths = [item.split("=", 1)[1] for item in models.split(",")]
    old, older, busy = slot("old", paths[0], 2.0), slot("older", paths[1], 1.0), slot("busy", paths[2], 0.0, users=1)
    budget = MemoryBudget(1)
    budget.limit = budget.committed([old, older, busy]) + HEADROOM_BYTES + size // 2  # half a model short
    assert budget.plan_room(slot("new", paths[0], 3.0), [busy, old, older]) == [older], "the oldest idle one only"
    assert older.backend is not None, "planning unloads nothing"
    budget.limit = budget.committed([old, busy]) + HEADROOM_BYTES - size // 2  # old is not enough: busy holds room
    with pytest.raises(ModelNotReady, match=r"held by models in use \('busy'\)"):
        budget.plan_room(slot("new", paths[0], 3.0), [busy, old])


def test_a_model_that_cannot_fit_even_alone_is_refused_naming_the_limit(large_models):
    models, size = large_models
    path = models.split(",")[0].split("=", 1)[1]
    budget = MemoryBudget(1)
    budget.limit = budget.baseline + size // 2
    with pytest.raises(ModelNotReady, match=r"needs about \d+ MB, more than the memory limit"):
        budget.plan_room(slot("new", path, 1.0), [slot("idle", path, 0.0)])


def test_with_no_limit_nothing_is_unloaded(large_models, monkeypatch):
    monkeypatch.setattr("palaver.backends.budget.cgroup_limit", lambda: 0)
    models, _ = large_models
    path = models.split(",")[0].split("=", 1)[1]
    assert MemoryBudget(0).plan_room(slot("a", path, 1.0), [slot("b", path, 0.0)]) == []


def test_a_model_in_use_is_never_unloaded_and_a_load_that_needs_its_room_gets_a_503_once_it_has_waited(
    make_settings, large_models
):
    router = one_model_at_a_time(make_settings, large_models, load_wait=1)
    params = router.settings.generation_defaults()
    try:
        stream = router.stream(GenerationRequest(params, messages=[Message("user", "hi")], model="one"))
        next(stream)  # one is loaded, and its request is in flight
        with pytest.raises(ModelNotReady, match=r"held by models in use \('one'\)") as caught:
            router.generate(GenerationRequest(params, prompt="hi", model="two"))
        assert caught.value.retry_after and router.describe_model("one")["state"] == "ready"
        assert isinstance(final(stream, Reply), Reply)
        assert router.generate(GenerationRequest(params, prompt="hi", model="two")).usage.completion_tokens > 0
        assert router.describe_model("one")["state"] == "unloaded", "idle once its request ended: it made room"
    finally:
        router.close()


def test_a_load_waiting_for_room_is_served_when_it_frees_and_the_busy_model_takes_no_new_requests_meanwhile(
    make_settings, large_models
):
    router = one_model_at_a_time(make_settings, large_models, load_wait=60)
    params = router.settings.generation_defaults()
    replies: dict[str, Reply] = {}

    def ask(model: str) -> None:
        replies[model] = router.generate(GenerationRequest(params, prompt="hi", model=model))

    try:
        stream = router.stream(GenerationRequest(params, messages=[Message("user", "hi")], model="one"))
        next(stream)
        two = threading.Thread(target=ask, args=("two",))
        two.start()
        wait_until(lambda: router._draining["one"] == 1, what="two waiting for one's room")
        late = threading.Thread(target=ask, args=("one",))  # would hold one's room again: it waits its turn
        late.start()
        wait_until(lambda: late.is_alive() and router.slots["one"].users == 1, what="the late request waiting")
        assert isinstance(final(stream, Reply), Reply)  # one's request ends: two takes the room
        two.join(60)
        late.join(60)
        assert set(replies) == {"one", "two"} and all(reply.usage.completion_tokens for reply in replies.values())
        assert router.describe_model("one")["unloads"] == 1 and router.describe_model("two")["unloads"] == 1
    finally:
        router.close()


def test_a_model_that_cannot_fit_is_refused_before_anything_is_unloaded(make_settings, large_models, gguf_chat_model):
    models, size = large_models
    big = models.split(",")[0].split("=", 1)[1]
    limit = resident_bytes() + HEADROOM_BYTES + size // 2  # the small model and its cache fit; the big one never
    settings = make_settings(
        models=f"small={gguf_chat_model},big={big}", memory_limit=limit, max_batch_size=2, max_context_tokens=256
    )
    router = ModelRouter(settings)
    params = settings.generation_defaults()
    try:
        assert router.generate(GenerationRequest(params, prompt="hi", model="small")).usage.completion_tokens > 0
        with pytest.raises(ModelNotReady, match=r"'big' needs about \d+ MB, more than the memory limit"):
            router.generate(GenerationRequest(params, prompt="hi", model="big"))
        assert router.describe_model("small")["state"] == "ready", "nothing is unloaded for a model that cannot fit"
        assert router.describe_model("big")["state"] == "unloaded" and router.describe_model("big")["loads"] == 0
        assert router.generate(GenerationRequest(params, prompt="hi", model="small")).usage.completion_tokens > 0
    finally:
        router.close()


def test_a_footprint_measured_too_high_makes_room_but_never_refuses_a_model_for_good(large_models):
    models, size = large_models
    paths = [item.split("=", 1)[1] for item in models.split(",")]
    idle = slot("idle", paths[1], 1.0)
    budget = MemoryBudget(1)
    budget.limit = budget.baseline + 2 * size + 2 * HEADROOM_BYTES
    # Its last load was measured while other threads took memory too: more than the whole limit.
    inflated = slot("inflated", paths[0], 2.0)
    inflated.footprint = 10 * budget.limit
    with pytest.raises(ModelNotReady, match="retry shortly"):  # waits for room, never "needs more than the limit"
        budget.plan_room(inflated, [idle])


def test_a_request_for_a_model_being_swapped_in_waits_until_what_it_replaces_is_gone(
    make_settings, large_models, monkeypatch
):
    router = one_model_at_a_time(make_settings, large_models, load_wait=60)
    params = router.settings.generation_defaults()
    replies: list[Reply] = []
    released: list[str] = []
    loads_began_after: list[list[str]] = []  # what had been released each time "two" began to load
    releasing, second_arrived = threading.Event(), threading.Event()
    release, start, wait = router._release, Engine.start, router._changed.wait

    def slow_release(name, backend):
        releasing.set()
        second_arrived.wait(60)  # the second request waits for its lease, or has begun the load itself
        release(name, backend)
        released.append(name)

    def recorded_start(engine: Engine) -> None:
        if engine.name == "two" and engine.state == "idle":
            loads_began_after.append(list(released))
            second_arrived.set()
        start(engine)

    def watched_wait(timeout=None):
        second_arrived.set()
        return wait(timeout)

    def ask() -> None:
        replies.append(router.generate(GenerationRequest(params, prompt="hi", model="two")))

    try:
        assert router.generate(GenerationRequest(params, prompt="hi", model="one")).usage.completion_tokens > 0
        monkeypatch.setattr(router, "_release", slow_release)
        monkeypatch.setattr(Engine, "start", recorded_start)
        first = threading.Thread(target=ask)
        first.start()
        assert releasing.wait(60), "two's first request unloads one"
        monkeypatch.setattr(router._changed, "wait", watched_wait)
        second = threading.Thread(target=ask)
        second.start()
        first.join(60)
        second.join(60)
        assert len(replies) == 2 and all(reply.usage.completion_tokens for reply in replies)
        assert loads_began_after == [["one"]], "two's load began while one still held its memory"
        assert router.describe_model("two")["loads"] == 1 and router.describe_model("one")["state"] == "unloaded"
    finally:
        router.close()
