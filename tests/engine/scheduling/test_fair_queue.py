"""The engine's queue hands requests out one client at a time."""

import threading

from palaver.core.config import Settings
from palaver.core.requests import GenerationRequest
from palaver.core.types import Caller
from palaver.engine.scheduling.fair_queue import FairQueue
from palaver.engine.scheduling.generation import Job


def request(client: str, label: str) -> Job:
    return Job(GenerationRequest(Settings().generation_defaults(), prompt=label, caller=Caller(client)))


def test_clients_are_served_round_robin_and_each_in_order():
    queue = FairQueue()
    for index in range(6):
        queue.put(request("flood", f"f{index}"))
    queue.put(request("alice", "a0"))
    queue.put(request("bob", "b0"))
    queue.put(request("alice", "a1"))
    taken = [item.request.prompt for item in queue.take(block=False, limit=5)]
    assert taken == ["f0", "a0", "b0", "f1", "a1"], "a newcomer waits one turn at most, not behind the flood"
    assert [item.request.prompt for item in queue.take(block=False, limit=10)] == ["f2", "f3", "f4", "f5"]
    assert queue.take(block=False, limit=3) == [] and len(queue) == 0


def test_take_waits_for_a_request_when_asked_and_close_ends_it_after_the_queued_ones():
    queue = FairQueue()
    got: list = []
    waiter = threading.Thread(target=lambda: got.extend(queue.take(block=True, limit=4)))
    waiter.start()
    queue.put(request("c", "first"))
    waiter.join(10)
    assert [item.request.prompt for item in got] == ["first"]
    queue.put(request("c", "last"))
    queue.close()
    assert [item and item.request.prompt for item in queue.take(block=True, limit=4)] == ["last", None]
    assert queue.take(block=True, limit=4) == [None]
    assert queue.take(block=False, limit=0) == [], "a full batch takes nothing, not even the end"
