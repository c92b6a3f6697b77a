"""Model switches per client: each client's loads that unload another model, bounded over a minute."""

import pytest
from helpers import one_model_at_a_time

from palaver.backends import ModelRouter
from palaver.backends.switches import SwitchBudget
from palaver.core.errors import RateLimited
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, Caller, Reply, final


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_past_its_switches_gets_429_naming_the_models_and_when_to_retry():
    clock = Clock()
    budget = SwitchBudget(2, clock)
    budget.charge("mallory", "big", ["small"])
    clock.now += 10
    budget.charge("mallory", "big", ["small"])
    with pytest.raises(RateLimited) as refused:
        budget.charge("mallory", "big", ["small"])
    error = refused.value
    assert error.status == 429 and error.code == "model_switches_exceeded" and error.retry_after == 50
    assert "'big'" in error.message and "'small'" in error.message and "PALAVER_CLIENT_SWITCHES" in error.message
    budget.charge("alice", "big", ["small"])  # another client has its own
    clock.now += 51  # the first switch has left the window
    budget.charge("mallory", "big", ["small"])


def test_no_bound_and_the_servers_own_loads_are_never_counted():
    for _ in range(10):
        SwitchBudget(0).charge("mallory", "big", ["small"])
    budget = SwitchBudget(1)
    for _ in range(10):
        budget.charge("", "big", ["small"])


def test_clients_whose_switches_have_aged_out_are_forgotten():
    clock = Clock()
    budget = SwitchBudget(1, clock)
    for index in range(1000):
        budget.charge(f"client-{index}", "big", ["small"])
    clock.now += 61
    budget.charge("last", "big", ["small"])
    assert list(budget._switches) == ["last"], "memory stays bounded by the last minute's switches"


def request_from(client: str, model: str, router: ModelRouter) -> GenerationRequest:
    """Return a short request for model made by client: a request keeps the caller it was made for."""
    token = CALLER.set(Caller(client))
    try:
        return GenerationRequest(router.settings.generation_defaults(), prompt="hi", model=model)
    finally:
        CALLER.reset(token)


def test_alternating_models_costs_the_client_who_alternates_and_the_default_always_loads(make_settings, large_models):
    router = one_model_at_a_time(make_settings, large_models, client_switches=2)

    def ask(client: str, model: str) -> Reply:
        return router.generate(request_from(client, model, router))

    try:
        ask("mallory", "one")  # the default, into free room
        ask("mallory", "two")  # a switch: one goes
        ask("mallory", "one")  # back to the default: never counted
        ask("mallory", "two")  # the second switch
        ask("mallory", "one")
        with pytest.raises(RateLimited, match="PALAVER_CLIENT_SWITCHES") as refused:
            ask("mallory", "two")
        assert refused.value.code == "model_switches_exceeded" and refused.value.retry_after
        assert router.describe_model("one")["state"] == "ready", "the refused switch unloaded nothing"
        assert ask("alice", "one").usage.completion_tokens > 0, "the default serves everyone else"
        assert ask("alice", "two").usage.completion_tokens > 0, "another client's switches are its own"
    finally:
        router.close()


def test_a_client_out_of_switches_cannot_hold_back_the_model_others_are_using(make_settings, large_models):
    router = one_model_at_a_time(make_settings, large_models, client_switches=1, load_wait=60)

    def stream(client: str, model: str):
        return router.stream(request_from(client, model, router))

    try:
        assert final(stream("mallory", "one"), Reply).usage.completion_tokens > 0  # the default, into free room
        assert final(stream("mallory", "two"), Reply).usage.completion_tokens > 0  # its one switch
        held = stream("alice", "one")  # the default is loaded again (never charged), and in use
        next(held)
        with pytest.raises(RateLimited, match="PALAVER_CLIENT_SWITCHES"):
            final(stream("mallory", "two"), Reply)  # at once: waiting would hold alice's next requests back
        assert router._draining["one"] == 0
        assert final(stream("alice", "one"), Reply).usage.completion_tokens > 0
        assert final(held, Reply).usage.completion_tokens > 0
    finally:
        router.close()
