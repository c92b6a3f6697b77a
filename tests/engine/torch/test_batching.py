"""Continuous batching: replies made in a batch equal replies made alone, whoever joins or leaves."""

import threading

import pytest
from helpers import model_held, raising
from timing import wait_until

from commons import Message, Settings
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.engine import GenerationRequest
from palaver.engine.torch.loading import load_model

FAMILIES = ["chat_model", "gguf_chat_model", "dialogpt_model", "blenderbot_model", "blenderbot_small_model"]


def history(turns: int) -> list[Message]:
    return [
        Message("user" if i % 2 == 0 else "assistant", f"turn {i} tell me a story about a cat") for i in range(turns)
    ]


def greedy(max_new_tokens: int, **overrides):
    return Settings(temperature=0.0, max_new_tokens=max_new_tokens, **overrides).generation_defaults()


CASES = [(history(1), 6), (history(5), 12), (history(3), 3), (history(7), 9)]


@pytest.mark.parametrize(
    "fixture, weights",
    [(fixture, "auto") for fixture in FAMILIES] + [("chat_model", "q8_0"), ("dialogpt_model", "q8_0")],
)
def test_greedy_replies_in_a_batch_equal_replies_alone(request, fixture, weights):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)), weights=weights)).family
    prompts = [(family.build_prompt(messages, n), greedy(n)) for messages, n in CASES]
    alone = [family.generate(prompt, params, threading.Event()) for prompt, params in prompts]
    batch = family.start_batch()
    rows = [family.new_row(prompt, params, threading.Event()) for prompt, params in prompts]
    # Join at different steps, and leave at different steps (mixed max_new_tokens).
    batch.add(rows[0])
    batch.step()
    batch.add(rows[1])
    batch.step()
    batch.add_many([rows[2], rows[3]])  # two prompts of different lengths prefilled in one padded pass
    finished = batch.remove_done()
    while batch.rows:
        batch.step()
        finished += batch.remove_done()
    assert len(finished) == 4
    assert [row.reply() for row in rows] == alone


@pytest.mark.parametrize("fixture", FAMILIES)
def test_cancelling_one_row_leaves_the_others_untouched(request, fixture):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)))).family
    prompts = [(family.build_prompt(messages, n), greedy(n, repetition_penalty=1.3)) for messages, n in CASES]
    alone = [family.generate(prompt, params, threading.Event()) for prompt, params in prompts]
    flags = [threading.Event() for _ in prompts]
    batch = family.start_batch()
    rows = [family.new_row(prompt, params, flag) for (prompt, params), flag in zip(prompts, flags)]
    batch.add_many(rows)
    batch.step()
    flags[1].set()
    while batch.rows:
        batch.remove_done()
        if batch.rows:
            batch.step()
    replies = [row.reply() for row in rows]
    assert replies[1].finish_reason == "cancelled" and replies[1].usage.completion_tokens <= 3
    assert [replies[i] for i in (0, 2, 3)] == [alone[i] for i in (0, 2, 3)]


def test_concurrent_requests_share_forward_passes_and_match_alone(make_app, chat_model):
    app = make_app(chat_model, max_batch_size=8)
    engine = app.extensions["palaver"].backend
    assert engine.wait_ready(30)
    requests = [GenerationRequest(greedy(n), messages=messages) for messages, n in CASES * 2]
    alone = [engine.generate(GenerationRequest(r.params, messages=r.messages)) for r in requests]
    replies = [None] * len(requests)
    sizes = app.extensions["palaver"].metrics.batch_size
    before_total, before_steps = histogram_totals(sizes)

    def ask(index):
        replies[index] = engine.generate(requests[index])

    with model_held(engine.loaded().model.family.model) as (busy, release):
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
        threads[0].start()
        assert busy.wait(10)  # the first request's prefill is held while the others queue
        for thread in threads[1:]:
            thread.start()
        # In the queue, not only admitted: a request builds its prompt (slowly on a busy machine) before it queues.
        queue = engine.loaded()._queue
        wait_until(lambda: len(queue) == len(requests) - 1, 30, "every request but the held one queued")
        release.set()
        for thread in threads:
            thread.join(30)
    assert replies == alone
    total, steps = histogram_totals(sizes)
    assert (total - before_total) / (steps - before_steps) > 2, "requests were generated together"


def histogram_totals(histogram) -> tuple[float, float]:
    """Return a histogram's sum and count."""
    samples = histogram.collect()[0].samples
    return (
        next(s.value for s in samples if s.name.endswith("_sum")),
        next(s.value for s in samples if s.name.endswith("_count")),
    )


@pytest.mark.parametrize(
    "path, body",
    [
        (
            "/v1/completions",
            {"model": "chat-llama", "prompt": ["one", "two two", "three three three", "four"], "max_tokens": 6},
        ),
        ("/invocations", {"inputs": ["one", "two two", "three three three", "four"], "params": {"max_new_tokens": 6}}),
    ],
)
def test_a_list_of_prompts_is_generated_as_one_batch(make_app, chat_model, path, body):
    app = make_app(chat_model)
    sizes = app.extensions["palaver"].metrics.batch_size
    response = app.test_client().post(path, json=body)
    assert response.status_code == 200
    total, steps = histogram_totals(sizes)
    assert total / steps > 1.5, "the prompts shared forward passes"


@pytest.mark.parametrize("fixture", ["chat_model", "dialogpt_model"])
def test_a_conversations_next_turn_reuses_its_cache_and_replies_the_same(make_app, request, fixture):
    model = request.getfixturevalue(fixture)
    replies = {}
    for budget in (0, 4096):
        app = make_app(model, prefix_cache_tokens=budget, max_new_tokens=6)
        client = app.test_client()
        first = client.post("/api/chat", json={"message": "tell me a story about a cat"}).get_json()
        second = client.post(
            "/api/chat", json={"message": "and then what", "conversation_id": first["conversation_id"]}
        ).get_json()
        replies[budget] = (first["reply"], second["reply"])
        counts = app.extensions["palaver"].backend.loaded().counts
        if budget:
            assert counts["reused_prompt_tokens"] > 0
            assert counts["prefilled_tokens"] < first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert replies[0] == replies[4096]


def test_a_failure_while_joining_fails_cleanly_and_the_engine_goes_on(make_app, chat_model, caplog):
    app = make_app(chat_model, max_new_tokens=4)
    client = app.test_client()
    first = client.post("/api/chat", json={"message": "tell me a story about a cat"}).get_json()
    model = app.extensions["palaver"].backend.loaded().model.family.model.module
    model.forward = raising(RuntimeError("prefill exploded"))
    failed = client.post("/api/chat", json={"message": "and then", "conversation_id": first["conversation_id"]})
    del model.forward
    assert failed.status_code == 500 and "prefill exploded" in caplog.text
    again = client.post("/api/chat", json={"message": "and then", "conversation_id": first["conversation_id"]})
    assert again.status_code == 200
    history = client.get(f"/api/conversations/{first['conversation_id']}").get_json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] * 2


def test_a_row_that_fails_inside_a_running_batch_fails_alone(make_app, chat_model, monkeypatch):
    from palaver.core.errors import GenerationFailed
    from palaver.engine.decoding.sampling import Sampler

    app = make_app(chat_model, max_batch_size=8)
    engine = app.extensions["palaver"].backend
    assert engine.wait_ready(30)
    requests = [GenerationRequest(greedy(n), messages=messages) for messages, n in CASES]
    alone = [engine.generate(GenerationRequest(r.params, messages=r.messages)) for r in requests]
    doomed = GenerationRequest(greedy(12, seed=13), messages=history(3))
    doomed_prompt = len(engine.tokenize(doomed))
    real_choose, in_flight_at_failure = Sampler.choose, []

    def choose(self, logits, seen):
        if self.params.seed == 13 and len(seen) > doomed_prompt + 2:  # its third token
            in_flight_at_failure.append(engine.pending)
            return int(torch_nan_multinomial())
        return real_choose(self, logits, seen)

    monkeypatch.setattr(Sampler, "choose", choose)
    outcomes: dict[int, object] = {}

    def ask(index, request):
        try:
            outcomes[index] = engine.generate(request)
        except GenerationFailed as exc:
            outcomes[index] = exc

    everyone = [*requests, doomed]
    with model_held(engine.loaded().model.family.model) as (busy, release):
        threads = [threading.Thread(target=ask, args=(i, r)) for i, r in enumerate(everyone)]
        threads[0].start()
        assert busy.wait(10)
        for thread in threads[1:]:
            thread.start()
        queue = engine.loaded()._queue  # queued, not only admitted (see above)
        wait_until(lambda: len(queue) == len(everyone) - 1, 30, "every request but the held one queued")
        release.set()
        for thread in threads:
            thread.join(30)
    assert isinstance(outcomes[len(requests)], GenerationFailed)
    assert in_flight_at_failure and in_flight_at_failure[0] > 1, "the row failed while others were generating"
    assert [outcomes[i] for i in range(len(requests))] == alone
    assert engine.pending == 0
    assert engine.generate(GenerationRequest(greedy(4), messages=history(1))).finish_reason in ("stop", "length")


def torch_nan_multinomial():
    """Sample from NaN probabilities, which raises inside torch as a NaN temperature used to."""
    import torch

    return torch.multinomial(torch.full((4,), float("nan")), 1)


class CancelledAfter:
    """A cancel flag that turns on by itself after it has been read a given number of times."""

    def __init__(self, reads: int):
        self.reads = reads

    def is_set(self) -> bool:
        self.reads -= 1
        return self.reads < 0

    def set(self) -> None:
        self.reads = 0


@pytest.mark.parametrize("fixture", ["chat_model", "blenderbot_model"])
def test_a_cancel_landing_at_any_moment_ends_its_row_exactly_once(request, fixture):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)))).family
    prompts = [(family.build_prompt(messages, n), greedy(n)) for messages, n in CASES]
    for reads in range(0, 24):  # the cancel lands between any two reads of the flag, in join, step or removal
        batch = family.start_batch()
        flags = [threading.Event(), CancelledAfter(reads), threading.Event(), CancelledAfter(reads + 1)]
        rows = [family.new_row(prompt, params, flag) for (prompt, params), flag in zip(prompts, flags)]
        batch.add_many(rows)
        finished = batch.remove_done()
        while batch.rows:
            batch.step()
            finished += batch.remove_done()
        assert sorted(map(id, finished)) == sorted(map(id, rows)), f"each row ends once (flag flips after {reads})"


@pytest.mark.parametrize("fixture", ["chat_model", "gguf_chat_model", "dialogpt_model"])
def test_next_turns_joining_together_from_their_caches_reply_as_alone(request, fixture):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)))).family
    cache = PrefixCache(4096)
    firsts = [history(1), history(3), history(5)]
    # Each conversation's first turn, alone, fills the prefix cache.
    for messages in firsts:
        batch = family.start_batch(cache)
        batch.add(family.new_row(family.build_prompt(messages, 5), greedy(5), threading.Event()))
        while batch.rows:
            batch.step()
            batch.remove_done()
    # Their next turns, of different lengths, join one batch together and reuse those caches.
    nexts = [
        messages + [Message("assistant", "a cat"), Message("user", "and then " * (i + 1))]
        for i, messages in enumerate(firsts)
    ]
    prompts = [(family.build_prompt(messages, 7), greedy(7)) for messages in nexts]
    alone = [family.generate(prompt, params, threading.Event()) for prompt, params in prompts]
    reused_before = cache.counts["reused_prompt_tokens"]
    batch = family.start_batch(cache)
    rows = [family.new_row(prompt, params, threading.Event()) for prompt, params in prompts]
    batch.add_many(rows)
    while batch.rows:
        batch.step()
        batch.remove_done()
    assert cache.counts["reused_prompt_tokens"] > reused_before, "the joining rows came from the cache"
    assert [row.reply() for row in rows] == alone
