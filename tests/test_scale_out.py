"""Many processes, one truth: two servers on one database serve the same conversations, taking turns."""

import json
import threading
from contextlib import ExitStack

import databases
import pytest
import requests
from servers import procfile_server, server_env

FORM_JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pair(request, slow_gguf_chat_model, tmp_path_factory):
    """Two Procfile servers on one database, sharing the cache (and so the cookie key), for the module."""
    cache = tmp_path_factory.mktemp("scale-out")
    if request.param == "sqlite":
        url = f"sqlite:///{cache / 'palaver.db'}"
    else:
        url = databases.fresh_postgres_database(request.getfixturevalue("postgres_server"))
    settings = {"max_new_tokens": "6", "database_url": url, "max_waiting_per_conversation": "16"}
    # A reply may run to 1,024 tokens, seconds on this model: long enough for Stop and delete to land.
    env = server_env(slow_gguf_chat_model, cache, request_timeout="60", max_context_tokens="8192", **settings)
    with ExitStack() as stack:
        yield [
            stack.enter_context(procfile_server(env, wait_for="/readyz", timeout=120, wait_for_exit=False))
            for _ in range(2)
        ]


def history(url, conversation_id, client=requests):
    response = client.get(f"{url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def test_a_user_alternating_between_processes_keeps_one_history(pair):
    one, two = pair
    browser = requests.Session()
    ids = set()
    for step in range(4):
        server = (one, two)[step % 2]
        reply = browser.post(f"{server.url}/", data={"textbox": f"page {step}"}, headers=FORM_JSON)
        assert reply.status_code == 200, reply.text
        ids.add(reply.json()["conversation_id"])
    assert len(ids) == 1
    (conversation_id,) = ids
    for server in (one, two):
        users = [m["content"] for m in history(server.url, conversation_id, browser) if m["role"] == "user"]
        assert users == [f"page {step}" for step in range(4)]
        assert f"page {3}" in browser.get(f"{server.url}/").text
        listed = browser.get(f"{server.url}/api/conversations", timeout=10).json()["conversations"]
        assert [c["conversation_id"] for c in listed] == [conversation_id]
        stranger = requests.get(f"{server.url}/api/conversations/{conversation_id}", timeout=10)
        assert stranger.status_code == 404


def test_concurrent_messages_through_both_processes_take_turns(pair):
    one, two = pair
    first = requests.post(f"{one.url}/api/chat", json={"message": "start"}, timeout=30).json()
    conversation_id = first["conversation_id"]
    statuses = []

    def send(index):
        url = (one, two)[index % 2].url
        response = requests.post(
            f"{url}/api/chat", json={"message": f"m{index}", "conversation_id": conversation_id}, timeout=90
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 10
    messages = history(two.url, conversation_id)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 11, "no turn lost or interleaved"
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert sorted(users) == sorted(["start"] + [f"m{index}" for index in range(10)]), "none duplicated"


def long_reply(browser, url):
    """Start a conversation on url, then a long streaming reply in it; return its id and the reply's events."""
    started = browser.post(f"{url}/", data={"textbox": "hello", "max_new_tokens": "2"}, headers=FORM_JSON)
    stream = browser.post(
        f"{url}/",
        data={"textbox": "tell me a long story", "stop": "", "max_new_tokens": "1024"},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=60,
    )
    events = (json.loads(line[len(b"data: ") :]) for line in stream.iter_lines() if line.startswith(b"data:"))
    return started.json()["conversation_id"], events


def test_stop_pressed_on_one_process_stops_the_reply_on_the_other(pair):
    one, two = pair
    browser = requests.Session()
    conversation_id, events = long_reply(browser, one.url)
    shown = next(events)["delta"]
    assert browser.post(f"{two.url}/stop").json() == {"stopped": True}
    for event in events:
        if event.get("done"):
            break
        shown += event["delta"]
    assert event["finish_reason"] == "cancelled"
    assert history(two.url, conversation_id, browser)[-1] == {"role": "assistant", "content": event["reply"]}
    assert event["reply"] == shown


def test_deleting_on_one_process_stops_the_reply_on_the_other_and_it_stays_deleted(pair):
    one, two = pair
    browser = requests.Session()
    conversation_id, events = long_reply(browser, one.url)
    assert next(events)["delta"] is not None
    assert browser.delete(f"{two.url}/api/conversations/{conversation_id}", timeout=10).json()["deleted"]
    done = next(event for event in events if "delta" not in event)
    assert done["finish_reason"] == "cancelled"
    for server in (one, two):
        assert browser.get(f"{server.url}/api/conversations/{conversation_id}", timeout=10).status_code == 404
        assert browser.get(f"{server.url}/api/conversations", timeout=10).json()["conversations"] == []
