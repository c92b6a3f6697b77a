"""A generation request as its caller makes it: its inputs and a cancel flag, and none of a backend's state."""

import dataclasses
import threading

from palaver.core.config import Settings
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, Caller, Message

PARAMS = Settings().generation_defaults()


def test_a_request_holds_what_its_caller_gives_and_nothing_a_backend_builds():
    fields = {field.name for field in dataclasses.fields(GenerationRequest)}
    assert fields == {
        "params",
        "messages",
        "prompt",
        "tools",
        "grammar",
        "model",
        "max_history",
        "client_gone",
        "caller",
        "cancelled",
    }, "prompts, compiled grammars, results and queues are the engine's (scheduling/generation.py's Job)"


def test_a_request_belongs_to_the_caller_that_made_it():
    assert GenerationRequest(PARAMS, prompt="x").client == "", "outside a request, the caller is nobody"
    made: list[GenerationRequest] = []

    def make() -> None:
        CALLER.set(Caller("address:1"))
        made.append(GenerationRequest(PARAMS, messages=[Message("user", "hi")]))

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    assert made[0].client == "address:1"


def test_cancelling_sets_the_flag_a_backend_watches():
    request = GenerationRequest(PARAMS, prompt="x")
    assert not request.cancelled.is_set()
    request.cancel()
    assert request.cancelled.is_set()


def test_requests_are_compared_by_identity():
    first, second = GenerationRequest(PARAMS, prompt="x"), GenerationRequest(PARAMS, prompt="x")
    assert first != second and len({first, second, first}) == 2
