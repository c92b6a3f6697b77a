"""The memory budget: idle models make room, least recently used first; models in use never do."""

import pytest

from commons import Settings
from palaver.backends import ModelRouter
from palaver.backends.budget import MemoryBudget
from palaver.backends.model_list import ModelEntry
from palaver.backends.slot import Slot
from palaver.core.errors import ModelNotReady
from palaver.core.types import Message, Reply, final
from palaver.engine.generation import GenerationRequest
from palaver.engine.memory import HEADROOM_BYTES, resident_bytes


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
    taken = budget.make_room(slot("new", paths[0], 3.0), [busy, old, older])
    assert [name for name, _ in taken] == ["older"], "the oldest idle one, and no more; never the busy one"
    assert older.backend is None and older.unloads == 1 and old.backend is not None and busy.backend is not None
    budget.limit = budget.committed([old, busy]) + HEADROOM_BYTES - size // 2  # old is not enough: busy holds room
    with pytest.raises(ModelNotReady, match=r"held by models in use \('busy'\)"):
        budget.make_room(slot("new", paths[0], 3.0), [busy, old])
    assert old.backend is not None, "nothing is unloaded for nothing"


def test_with_no_limit_nothing_is_unloaded(large_models, monkeypatch):
    monkeypatch.setattr("palaver.backends.budget.cgroup_limit", lambda: 0)
    models, _ = large_models
    path = models.split(",")[0].split("=", 1)[1]
    assert MemoryBudget(0).make_room(slot("a", path, 1.0), [slot("b", path, 0.0)]) == []


def test_a_model_in_use_is_never_unloaded_and_the_request_that_needs_its_room_gets_a_503(make_settings, large_models):
    models, size = large_models
    limit = resident_bytes() + HEADROOM_BYTES + size + 16 * 2**20  # room for one model, not for two
    names = models.replace("a=", "one=").replace("b=", "two=").rsplit(",", 1)[0]
    settings = make_settings(models=names, memory_limit=limit, max_batch_size=2, max_context_tokens=256)
    router = ModelRouter(settings)
    params = settings.generation_defaults()
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
