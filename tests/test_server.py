"""A real gunicorn server, started from the Procfile, under concurrent users on both surfaces."""

import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from servers import client_at, engine_counts, procfile_server, wait_for_cancelled
from timing import wait_until

STORY = "Write a very long story about a dragon who learns to bake bread."
FORM_JSON = {"Accept": "application/json"}


def user_texts(page: str) -> list[str]:
    return re.findall(
        r'<article class="message user"[^>]*>\s*<span class="who">[^<]*</span>\s*<p class="text">(.*?)</p>', page, re.S
    )


def test_procfile_server_answers_health_and_serves_the_page(server):
    assert requests.get(server + "/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(server + "/readyz", timeout=5).json()["state"] == "ready"
    assert 'id="chat-form"' in requests.get(server + "/", timeout=5).text


def test_sixteen_concurrent_users_on_both_surfaces_keep_their_own_histories(server):
    results: dict[str, list[str]] = {}
    errors: list[str] = []
    start = threading.Barrier(16)

    def api_user(name: str, address: str):
        start.wait()
        conversation_id, user = None, client_at(address)  # sixteen users are sixteen clients
        for turn in range(2):
            response = user.post(
                server + "/api/chat",
                timeout=60,
                json={"message": f"{name} says {turn}", "conversation_id": conversation_id},
            )
            if response.status_code != 200:
                errors.append(f"{name}: {response.status_code} {response.text}")
                return
            conversation_id = response.json()["conversation_id"]
        history = user.get(f"{server}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
        results[name] = [m["content"] for m in history if m["role"] == "user"]

    def form_user(name: str, address: str):
        start.wait()
        with client_at(address) as session:  # a cookie jar, like curl -c/-b
            for turn in range(2):
                response = session.post(server + "/", data={"textbox": f"{name} says {turn}"}, timeout=60)
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code}")
                    return
            results[name] = user_texts(response.text)

    threads = [threading.Thread(target=api_user, args=(f"api{n}", f"127.0.0.{10 + n}")) for n in range(8)]
    threads += [threading.Thread(target=form_user, args=(f"form{n}", f"127.0.0.{20 + n}")) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {name: [f"{name} says 0", f"{name} says 1"] for name in results} and len(results) == 16


def test_bad_requests_to_the_server_get_4xx_and_it_stays_up(server):
    assert requests.post(server + "/api/chat", data="{oops", timeout=5).status_code == 400
    assert requests.post(server + "/api/chat", json={"message": "x" * 70000}, timeout=5).status_code == 413
    assert requests.post(server + "/", data={"textbox": ""}, timeout=5).status_code == 400
    assert requests.post(server + "/api/chat", json={"message": "still up?"}, timeout=30).status_code == 200


@pytest.mark.server
def test_the_page_is_served_before_a_lazy_model_loads(gguf_chat_model, tmp_path):
    env = {"PALAVER_MODEL": str(gguf_chat_model), "PALAVER_CACHE_DIR": str(tmp_path)}
    # Exec'd by a shell from the Procfile's line, as a PaaS starts it (not forked from the suite's warm Python).
    with procfile_server(env, fresh=True) as running:
        parent = int(Path(f"/proc/{running.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert parent == os.getpid(), "gunicorn is the shell's exec, this process's child"
        base_url = running.url
        assert requests.get(base_url + "/", timeout=5).status_code == 200
        assert requests.get(base_url + "/readyz", timeout=5).status_code == 503
        assert requests.post(base_url + "/api/chat", json={"message": "hi"}, timeout=60).status_code == 200
        assert requests.get(base_url + "/readyz", timeout=5).status_code == 200


def test_curl_with_a_cookie_jar_continues_the_conversation(server, tmp_path):
    jar = str(tmp_path / "jar")

    def curl(text: str) -> str:
        return subprocess.run(
            ["curl", "-sS", "--fail", "-c", jar, "-b", jar, "-d", f"textbox={text}", server + "/"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    assert user_texts(curl("Hi there")) == ["Hi there"]
    assert user_texts(curl("Second line")) == ["Hi there", "Second line"]


def raw_post(base_url: str, path: str, body: dict) -> socket.socket:
    """Send a POST by hand, so the test can hang up whenever it likes."""
    url = urlparse(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    data = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def test_hanging_up_on_a_stream_stops_generation_within_a_few_tokens(embedded_server):
    before = engine_counts(embedded_server)
    sock = raw_post(
        embedded_server,
        "/v1/chat/completions",
        {
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": STORY}],
            "max_tokens": 300,
            "stream": True,
        },
    )
    received = b""
    while received.count(b'"content": "') + received.count(b'"content":"') < 4:  # role chunk plus 3 deltas
        received += sock.recv(4096)
    sock.close()
    after = wait_for_cancelled(embedded_server, before)
    generated = after["generated_tokens"] - before.get("generated_tokens", 0)
    print(f"tokens generated for a stream closed after 3 deltas: {generated} of 300")
    assert generated <= 12


def test_hanging_up_on_a_streamed_n_choice_reply_stops_every_choice(embedded_server):
    before = engine_counts(embedded_server)
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": STORY}], "max_tokens": 300}
    sock = raw_post(embedded_server, "/v1/chat/completions", {**body, "n": 3, "stream": True, "seed": 1})
    received = b""
    while received.count(b'"content": "') + received.count(b'"content":"') < 4:  # role chunk plus 3 deltas
        received += sock.recv(4096)
    sock.close()
    # Only the first choice was being streamed; the two waiting their turn stop too.

    def three_cancelled() -> dict | None:
        counts = engine_counts(embedded_server)
        return counts if counts.get("cancelled", 0) - before.get("cancelled", 0) >= 3 else None

    after = wait_until(three_cancelled, 30, "three choices cancelled")
    assert after.get("cancelled", 0) - before.get("cancelled", 0) == 3, after
    assert after["generated_tokens"] - before.get("generated_tokens", 0) < 3 * 300


def test_hanging_up_on_a_plain_request_stops_generation(embedded_server):
    before = engine_counts(embedded_server)
    sock = raw_post(embedded_server, "/api/chat", {"message": STORY, "max_new_tokens": 300})
    pending = f"{embedded_server}/readyz"
    wait_until(lambda: requests.get(pending, timeout=10).json()["pending"], 30, "the request in the engine", every=0.02)
    sock.close()
    after = wait_for_cancelled(embedded_server, before)
    generated = after["generated_tokens"] - before.get("generated_tokens", 0)
    print(f"tokens generated for a request dropped once it reached the engine: {generated} of 300")
    assert generated < 150, "the hang-up stopped the generation long before its end"
    reply = requests.post(embedded_server + "/api/chat", json={"message": "Hi", "max_new_tokens": 4}, timeout=30)
    assert reply.status_code == 200, "the engine is free again"


def test_the_api_can_stop_a_conversations_generation(embedded_server):
    browser = requests.Session()
    started = browser.post(embedded_server + "/", data={"textbox": "Hi", "max_new_tokens": "2"}, headers=FORM_JSON)
    conversation_id = started.json()["conversation_id"]
    with browser.post(
        f"{embedded_server}/c/{conversation_id}",
        data={"textbox": STORY},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=60,
    ) as stream:
        events = (json.loads(line[len(b"data: ") :]) for line in stream.iter_lines() if line.startswith(b"data:"))
        shown = next(events)["delta"]  # text has reached the client: what Stop keeps is not empty
        stopped = browser.post(f"{embedded_server}/api/conversations/{conversation_id}/cancel", timeout=10)
        assert stopped.json() == {"conversation_id": conversation_id, "stopped": True}
        for event in events:
            if event.get("done"):
                break
            shown += event["delta"]
    assert event["finish_reason"] == "cancelled" and event["usage"]["completion_tokens"] < 300
    assert event["reply"] == shown and shown
    history = browser.get(f"{embedded_server}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
    assert history[-1] == {"role": "assistant", "content": shown}, "what was kept is what the client got"
    assert browser.post(f"{embedded_server}/api/conversations/nope/cancel", timeout=10).status_code == 404
