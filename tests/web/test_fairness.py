"""Per-client fairness: one client's requests in flight are bounded, and the engine serves clients in turn."""

import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime

import pytest
import requests
from helpers import model_held
from servers import client_at, procfile_server, server_env
from timing import budget, wait_until

from palaver.core.errors import RateLimited
from palaver.web.fairness import ClientShares


def test_a_client_past_its_share_gets_429_and_each_place_is_given_back_once():
    shares = ClientShares(2)
    first, second = shares.take("a"), shares.take("a")
    with pytest.raises(RateLimited) as refused:
        shares.take("a")
    assert refused.value.status == 429 and refused.value.retry_after and refused.value.code == "client_share_exceeded"
    shares.take("b")  # another client has its own share
    first()
    first()  # giving back twice frees one place only
    shares.take("a")
    with pytest.raises(RateLimited):
        shares.take("a")
    second()
    assert ClientShares(0).take("a") is not None, "0 means no bound"


def test_the_engine_takes_a_waiting_client_before_the_rest_of_a_flood(make_app, chat_model):
    app = make_app(chat_model, max_batch_size=1, client_share=0)
    assert app.extensions["palaver"].backend.wait_ready(30)
    engine = app.extensions["palaver"].backend.loaded()
    order: list[str] = []
    take = engine._queue.take

    def taking(block, limit):  # the order in which the engine's batch admits them
        taken = take(block, limit)
        order.extend(job.request.prompt for job in taken if job is not None)
        return taken

    engine._queue.take = taking

    def ask(address: str, label: str) -> None:
        body = {"model": "chat-llama", "prompt": label, "max_tokens": 1}
        reply = app.test_client().post("/v1/completions", json=body, environ_base={"REMOTE_ADDR": address})
        assert reply.status_code == 200

    with model_held(engine.model.family.model) as (busy, release):
        threads = [threading.Thread(target=ask, args=("10.0.0.66", f"f{index}")) for index in range(4)]
        threads[0].start()
        assert busy.wait(30)  # f0 holds the one row
        for thread in threads[1:]:
            thread.start()
        wait_until(lambda: len(engine._queue) == 3, 30, "f1, f2 and f3 queued")
        late = threading.Thread(target=ask, args=("10.0.0.1", "a0"))
        late.start()
        wait_until(lambda: len(engine._queue) == 4, 30, "a0 queued behind them")
        release.set()
        for thread in [*threads, late]:
            thread.join(60)
    # f0 held the row; f1, f2 and f3 queued before alice, who waits behind one of them, not all three. Whether f0's
    # own take was seen depends on whether the worker was already waiting inside the unpatched take.
    after_f0 = [label for label in order if label != "f0"]
    assert after_f0[1] == "a0" and sorted(after_f0) == ["a0", "f1", "f2", "f3"], order


@pytest.fixture(scope="module")
def shared(gguf_chat_model, tmp_path_factory):
    """A server with the default share, whose database the test reaches into to hold a conversation's turn.

    It serves the chat Llama on the native step, which starts in seconds: the share is the web layer's.
    """
    cache = tmp_path_factory.mktemp("fairness")
    env = server_env(gguf_chat_model, cache, max_waiting_per_conversation="64", max_new_tokens="8")
    with procfile_server(env, wait_for="/readyz", timeout=120, wait_for_exit=False) as running:
        yield running, cache / "palaver.db"


@contextmanager
def turns_held(server, database, count: int):
    """Hold count /api/chat requests in flight (waiting for a turn held elsewhere); yield their answers."""
    conversation_id = requests.post(server.url + "/api/chat", json={"message": "hi"}, timeout=30).json()[
        "conversation_id"
    ]
    with sqlite3.connect(database) as db:  # as if another worker ran a long reply in it: followers wait
        db.execute(
            "UPDATE conversations SET lease_token = 'elsewhere', lease_until = ? WHERE id = ?",
            (datetime(2100, 1, 1).isoformat(sep=" "), conversation_id),
        )
    answers: list[requests.Response] = []
    body = {"message": "and then?", "conversation_id": conversation_id}
    holders = [
        threading.Thread(target=lambda: answers.append(requests.post(server.url + "/api/chat", json=body, timeout=60)))
        for _ in range(count)
    ]
    for thread in holders:
        thread.start()
    try:
        yield answers
    finally:
        with sqlite3.connect(database) as db:
            db.execute("UPDATE conversations SET lease_token = NULL, lease_until = NULL")
        for thread in holders:
            thread.join(60)


def in_flight(server) -> int:
    return requests.get(server.url + "/readyz", timeout=10).json()["waiting"]


def test_choices_and_prompts_count_against_the_share_one_row_each(shared):
    server, database = shared
    chat = {"model": "chat-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with turns_held(server, database, 5) as answers:
        wait_until(lambda: in_flight(server) == 5, what="five requests waiting for their turn")
        # Five places held of eight: four choices, or four prompts, would be twelve rows.
        for path, body in [
            ("/v1/chat/completions", {**chat, "n": 4}),
            ("/v1/completions", {"model": "chat-llama", "prompt": ["a", "b", "c", "d"], "max_tokens": 2}),
            ("/v1/embeddings", {"model": "chat-llama", "input": ["a", "b", "c", "d"]}),
            ("/invocations", {"inputs": ["a", "b", "c", "d"], "params": {"max_new_tokens": 2}}),
        ]:
            refused = requests.post(server.url + path, json=body, timeout=30)
            assert refused.status_code == 429, (path, refused.text)
            assert "PALAVER_CLIENT_SHARE" in refused.text and refused.headers["Retry-After"], refused.text

        def three_choices() -> requests.Response | None:
            answer = requests.post(server.url + "/v1/chat/completions", json={**chat, "n": 3}, timeout=30)
            return None if answer.status_code == 429 else answer

        # A refused request's place comes back when the server closes its answer, which may trail the client.
        served = wait_until(three_choices, what="three choices served beside the five held requests")
        assert served.status_code == 200 and len(served.json()["choices"]) == 3, served.text
        other = client_at("127.0.0.2").post(server.url + "/v1/chat/completions", json={**chat, "n": 8}, timeout=30)
        assert other.status_code == 200 and len(other.json()["choices"]) == 8, "another client has a share of its own"
        assert answers == [], "the held requests still wait"
    assert sorted(answer.status_code for answer in answers) == [200] * 5


def test_a_request_of_more_rows_than_the_share_is_a_400_naming_the_field_and_the_limit(shared):
    server, _ = shared
    for path, body, field in [
        ("/v1/completions", {"model": "chat-llama", "prompt": ["a"] * 9, "max_tokens": 2}, "prompt"),
        ("/v1/embeddings", {"model": "chat-llama", "input": ["a"] * 9}, "input"),
        ("/ollama/api/embed", {"model": "chat-llama", "input": ["a"] * 9}, "input"),
        ("/invocations", {"inputs": ["a"] * 9}, "inputs"),
        ("/invocations", {"instances": ["a"] * 9}, "instances"),
    ]:
        refused = requests.post(server.url + path, json=body, timeout=30)
        assert refused.status_code == 400, (path, refused.text)
        assert field in refused.text and "PALAVER_CLIENT_SHARE" in refused.text and "at most 8" in refused.text
    body = {"model": "chat-llama", "prompt": ["a"] * 8, "max_tokens": 2}
    assert requests.post(server.url + "/v1/completions", json=body, timeout=30).ok
    assert requests.post(server.url + "/v1/embeddings", json={"model": "chat-llama", "input": ["a"] * 8}, timeout=30).ok


def test_one_address_holding_64_requests_gets_its_share_and_others_are_served(shared):
    server, database = shared
    with turns_held(server, database, 64) as answers:
        wait_until(lambda: len(answers) >= 56, 30, "56 requests past the share answered")
        refused = [answer for answer in answers if answer.status_code == 429]
        assert len(refused) == 56, [answer.status_code for answer in answers]
        assert all(answer.headers["Retry-After"] for answer in refused)
        assert refused[0].json()["error"]["code"] == "client_share_exceeded"
        other = client_at("127.0.0.2")
        started = time.monotonic()
        assert other.get(server.url + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < budget(1)
        chat = other.post(server.url + "/api/chat", json={"message": "hello", "max_new_tokens": 8}, timeout=30)
        assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] > 0
    assert sorted(answer.status_code for answer in answers) == [200] * 8 + [429] * 56
