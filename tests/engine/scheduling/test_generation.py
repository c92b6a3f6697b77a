"""A request's job: followed to its reply, stopped when its client leaves, time runs out or its caller cancels it,
served by the one helper both backends use, and its tokens reserved from its caller's budget and settled."""

import threading

import pytest

from palaver.core.config import Settings
from palaver.core.errors import ClientDisconnected, GenerationTimeout, ServerBusy
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, Caller, PromptInfo, Reply, Usage
from palaver.engine.scheduling.generation import FINISHED, Job, follow, serve

PARAMS = Settings().generation_defaults()


def job(**fields) -> Job:
    return Job(GenerationRequest(PARAMS, prompt="x", **fields))


def finished(work: Job, reply: Reply) -> None:
    """Finish a job as the engine does."""
    work.result.set_running_or_notify_cancel()
    work.result.set_result(reply)
    work.deltas.put(FINISHED)


def test_follow_yields_the_text_then_the_reply():
    work = job()
    for piece in ("Hel", "lo"):
        work.deltas.put(piece)
    finished(work, Reply("Hello", Usage(1, 2), 0, "stop"))
    items = list(follow(work, timeout=5))
    assert items[:2] == ["Hel", "lo"] and items[2].text == "Hello"


def test_a_client_that_leaves_or_a_deadline_cancels_the_request():
    gone = job(client_gone=lambda: True)
    with pytest.raises(ClientDisconnected):
        list(follow(gone, timeout=30))
    assert gone.request.cancelled.is_set() and gone.result.cancelled()
    slow = job()
    with pytest.raises(GenerationTimeout):
        list(follow(slow, timeout=0.01))
    assert slow.request.cancelled.is_set()


def test_a_job_its_caller_cancelled_before_it_started_ends_with_a_cancelled_reply():
    work = job()
    work.request.cancel()  # Stop, while the job waits in the queue: the worker skips it, leaving no result
    work.deltas.put(FINISHED)
    assert [reply.finish_reason for reply in follow(work, timeout=5)] == ["cancelled"]
    assert work.result.cancelled(), "settled, so a reservation on it is settled too"


def test_serve_yields_the_info_then_follows_and_stops_the_work_when_the_stream_closes_early():
    work, stopped = job(), []
    stream = serve(work, lambda: PromptInfo(3, 0), 5, stop=lambda: stopped.append(True))
    assert next(stream) == PromptInfo(3, 0)
    stream.close()  # the client left before the reply
    assert work.request.cancelled.is_set() and work.result.cancelled() and stopped


def test_serve_settles_a_job_that_failed_to_start_and_keeps_the_error():
    work = job()

    def refuse() -> PromptInfo:
        raise ServerBusy("busy", retry_after=1)

    with pytest.raises(ServerBusy):
        next(serve(work, refuse, 5))
    assert work.result.cancelled()


def test_a_reservation_is_settled_with_what_was_generated_or_with_nothing():
    settled: list[tuple[int, int]] = []

    def reserve(most: int):
        return lambda used: settled.append((most, used))

    def run(finish) -> None:
        CALLER.set(Caller("address:1", reserve))
        work = job()
        work.reserve_tokens(16)
        finish(work)

    thread = threading.Thread(target=run, args=(lambda w: finished(w, Reply("hi", Usage(3, 5), 0, "length")),))
    thread.start()
    thread.join()
    run_cancelled = threading.Thread(target=run, args=(lambda w: w.cancel(),))
    run_cancelled.start()
    run_cancelled.join()
    assert settled == [(16, 5), (16, 0)], "a request cancelled before it started generated nothing"


def test_jobs_are_compared_by_identity_and_take_their_requests_client():
    request = GenerationRequest(PARAMS, prompt="x")
    first, second = Job(request), Job(request)
    assert first != second and len({first, second, first}) == 2 and first.client == request.client
