"""Conversations outlive the process: a restart, and a worker killed mid-reply, on SQLite and PostgreSQL."""

import os
import signal
from pathlib import Path

import pytest
import requests
from servers import procfile_server, server_env
from timing import wait_until

FORM_JSON = {"Accept": "application/json"}


def serve(chat_model, cache_dir, database_url, **settings):
    env = server_env(chat_model, cache_dir, **{"max_new_tokens": "6", "database_url": database_url, **settings})
    return procfile_server(env, wait_for="/readyz", timeout=120)


def ready(server) -> bool:
    """Return whether the server answers /readyz with 200."""
    try:
        return requests.get(f"{server.url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:  # no worker to answer yet
        return False


def worker_pid(master_pid: int) -> int:
    """Return the pid of gunicorn's worker, the master's child."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def history(server, conversation_id, client=requests):
    response = client.get(f"{server.url}/api/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"]) for m in response.json()["messages"]]


def test_a_restart_keeps_every_conversation_on_the_page_and_the_api(gguf_chat_model, tmp_path, database_url):
    browser = requests.Session()
    with serve(gguf_chat_model, tmp_path, database_url) as server:
        first = requests.post(f"{server.url}/api/chat", json={"message": "hello"}, timeout=30).json()
        conversation_id = first["conversation_id"]
        requests.post(
            f"{server.url}/api/chat", json={"message": "again", "conversation_id": conversation_id}, timeout=30
        )
        page_reply = browser.post(f"{server.url}/", data={"textbox": "from the page"}, headers=FORM_JSON).json()
        before = history(server, conversation_id)
    with serve(gguf_chat_model, tmp_path, database_url) as server:  # the same database and cache: a new process
        assert history(server, conversation_id) == before and len(before) == 4
        third = requests.post(
            f"{server.url}/api/chat", json={"message": "still there?", "conversation_id": conversation_id}, timeout=30
        )
        assert third.status_code == 200 and len(history(server, conversation_id)) == 6
        listed = browser.get(f"{server.url}/api/conversations", timeout=10).json()["conversations"]
        assert [c["conversation_id"] for c in listed] == [page_reply["conversation_id"]]  # its owner survived too
        page = browser.get(f"{server.url}/").text  # the same cookie finds the same conversation
        assert (
            "from the page" in page
            and page_reply["conversation_id"]
            == browser.post(f"{server.url}/", data={"textbox": "and now"}, headers=FORM_JSON).json()["conversation_id"]
        )


def test_killing_the_worker_mid_reply_loses_only_that_turn(slow_gguf_chat_model, tmp_path, database_url):
    browser = requests.Session()
    # A short lease: the dead worker's turn is free by the time its successor is ready.
    settings = {"request_timeout": "60", "turn_lease": "3s"}
    with serve(slow_gguf_chat_model, tmp_path, database_url, **settings) as server:
        finished = browser.post(
            f"{server.url}/", data={"textbox": "hello", "max_new_tokens": "4"}, headers=FORM_JSON
        ).json()
        conversation_id = finished["conversation_id"]
        worker = worker_pid(server.pid)
        stream = browser.post(
            f"{server.url}/",
            data={"textbox": "tell me a long story", "stop": "", "max_new_tokens": "1024"},  # seconds long
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=30,
        )
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith(b"data:"))  # the reply has begun
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(requests.RequestException):
            for _ in lines:
                pass
        # gunicorn starts a new worker, which loads the model again
        wait_until(lambda: ready(server), 90, "a new worker ready", every=0.2)
        assert worker_pid(server.pid) != worker
        assert history(server, conversation_id, browser) == [("user", "hello"), ("assistant", finished["reply"])]
        after = browser.post(f"{server.url}/", data={"textbox": "are you back?"}, headers=FORM_JSON)
        assert after.status_code == 200 and after.json()["conversation_id"] == conversation_id
        assert [role for role, _ in history(server, conversation_id, browser)] == ["user", "assistant"] * 2
