"""A generation request: followed to its reply, stopped when its client leaves or time runs out, and its tokens
reserved from its caller's budget and settled with the real count."""

import threading

import pytest

from palaver.core.config import Settings
from palaver.core.errors import ClientDisconnected, GenerationTimeout
from palaver.core.types import CALLER, Caller, Reply, Usage
from palaver.engine.scheduling.generation import FINISHED, GenerationRequest, follow

PARAMS = Settings().generation_defaults()


def finished(request: GenerationRequest, reply: Reply) -> None:
    """Finish a request as the engine does."""
    request.result.set_running_or_notify_cancel()
    request.result.set_result(reply)
    request.deltas.put(FINISHED)


def test_follow_yields_the_text_then_the_reply():
    request = GenerationRequest(PARAMS, prompt="x")
    for piece in ("Hel", "lo"):
        request.deltas.put(piece)
    finished(request, Reply("Hello", Usage(1, 2), 0, "stop"))
    items = list(follow(request, timeout=5))
    assert items[:2] == ["Hel", "lo"] and items[2].text == "Hello"


def test_a_client_that_leaves_or_a_deadline_cancels_the_request():
    gone = GenerationRequest(PARAMS, prompt="x", client_gone=lambda: True)
    with pytest.raises(ClientDisconnected):
        list(follow(gone, timeout=30))
    assert gone.cancelled.is_set()
    slow = GenerationRequest(PARAMS, prompt="x")
    with pytest.raises(GenerationTimeout):
        list(follow(slow, timeout=0.01))
    assert slow.cancelled.is_set()


def test_a_reservation_is_settled_with_what_was_generated_or_with_nothing():
    settled: list[tuple[int, int]] = []

    def reserve(most: int):
        return lambda used: settled.append((most, used))

    def run(finish) -> None:
        CALLER.set(Caller("address:1", reserve))
        request = GenerationRequest(PARAMS, prompt="x")
        request.reserve_tokens(16)
        finish(request)

    thread = threading.Thread(target=run, args=(lambda r: finished(r, Reply("hi", Usage(3, 5), 0, "length")),))
    thread.start()
    thread.join()
    run_cancelled = threading.Thread(target=run, args=(lambda r: r.cancel(),))
    run_cancelled.start()
    run_cancelled.join()
    assert settled == [(16, 5), (16, 0)], "a request cancelled before it started generated nothing"
    assert GenerationRequest(PARAMS, prompt="x").client == "", "outside a request, the caller is nobody"


def test_requests_are_compared_by_identity():
    first, second = GenerationRequest(PARAMS, prompt="x"), GenerationRequest(PARAMS, prompt="x")
    assert first != second and len({first, second, first}) == 2
