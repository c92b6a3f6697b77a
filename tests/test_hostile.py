"""Hostile input against a real gunicorn server: nothing a visitor sends may hurt another user's request."""

import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests
from servers import client_at, procfile_server, server_env
from timing import wait_until

CHAT_MESSAGES = [{"role": "user", "content": "tell me a story about a cat"}]


@pytest.fixture(scope="module")
def hostile(gguf_chat_model, tmp_path_factory):
    """A server on the tiny chat model (native) with small memory bounds and message logging on."""
    env = server_env(
        gguf_chat_model,
        tmp_path_factory.mktemp("hostile"),
        max_new_tokens="8",
        max_conversations="5",
        log_messages="1",
        max_context_tokens="128",
    )
    with procfile_server(env, wait_for="/readyz", timeout=120, wait_for_exit=False) as running:
        yield running
        assert "Traceback" not in running.log(), "no request may leave a traceback in the server's log"


def raw_request(server, head: str, body: bytes = b"", read_timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes exactly as given and return the status and the whole answer."""
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=read_timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def post_raw_json(server, *args) -> requests.Response:
    """POST text as raw JSON bytes (lone surrogates and all) to path: post_raw_json(server, [session,] path, text)."""
    *session, path, text = args
    return (session[0] if session else requests).post(
        server.url + path,
        data=text.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/chat", '{"message": "hi", "temperature": NaN}', "temperature"),
        ("/api/chat", '{"message": "hi", "top_p": NaN}', "top_p"),
        ("/api/chat", '{"message": "hi", "temperature": Infinity}', "temperature"),
        ("/api/chat", '{"message": "hi", "temperature": 1e999}', "temperature"),
        (
            "/v1/chat/completions",
            '{"model": "chat-llama", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            "temperature",
        ),
        ("/v1/completions", '{"model": "chat-llama", "prompt": "x", "top_p": -Infinity}', "top_p"),
        ("/invocations", '{"inputs": ["x"], "params": {"temperature": NaN}}', "params.temperature"),
    ],
)
def test_non_finite_numbers_get_400_naming_the_field(hostile, path, body, field):
    response = post_raw_json(hostile, path, body)
    assert response.status_code == 400
    message = response.json()["error"]["message"] if "error" in response.json() else response.json()["message"]
    assert f"'{field}'" in message and "finite" in message


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_non_finite_form_values_get_400(hostile, value):
    response = requests.post(
        hostile.url + "/",
        data={"textbox": "hi", "temperature": value},
        headers={"Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and "'temperature'" in response.json()["error"]["message"]


def test_nan_sent_during_other_users_streams_hurts_none_of_them(hostile):
    users, attacker = client_at("127.0.0.2"), client_at("127.0.0.3")

    def stream_one(index: int) -> str:
        body = {"model": "chat-llama", "messages": CHAT_MESSAGES, "max_tokens": 48, "stream": True}
        with users.post(hostile.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as response:
            assert response.status_code == 200
            return response.text

    def poison(index: int) -> int:
        return post_raw_json(
            hostile,
            attacker,
            "/v1/chat/completions",
            '{"model": "chat-llama", "messages": '
            '[{"role": "user", "content": "x"}], "temperature": NaN, "stream": true}',
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        streams = [pool.submit(stream_one, i) for i in range(8)]
        poisons = [pool.submit(poison, i) for i in range(8)]
        assert {p.result() for p in poisons} == {400}
        for stream in streams:
            text = stream.result()
            assert '"finish_reason": "' in text and "[DONE]" in text and '"error"' not in text


def test_too_many_messages_get_400_and_long_histories_are_answered(hostile):
    flood = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word"} for i in range(1400)]
    refused = requests.post(
        hostile.url + "/v1/chat/completions", json={"model": "chat-llama", "messages": flood}, timeout=30
    )
    assert refused.status_code == 400 and "1 to 256 messages" in refused.json()["error"]["message"]
    kept = requests.post(
        hostile.url + "/v1/chat/completions",
        json={"model": "chat-llama", "messages": flood[:255], "max_tokens": 2},
        timeout=30,
    )
    assert kept.status_code == 200 and kept.json()["usage"]["truncated_turns"] > 0


def test_forty_messages_on_one_conversation_are_all_answered_quickly(hostile):
    conversation_id = requests.post(hostile.url + "/api/chat", json={"message": "start"}, timeout=30).json()[
        "conversation_id"
    ]

    def send(index: int) -> requests.Response:
        return requests.post(
            hostile.url + "/api/chat", json={"message": f"m{index}", "conversation_id": conversation_id}, timeout=60
        )

    with ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(send, range(40)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 409, 429} and statuses.count(200) >= 5
    busy = next(r for r in responses if r.status_code == 409)  # one client's share lets some of them wait
    assert busy.json()["error"]["code"] == "conversation_busy" and busy.headers["Retry-After"]
    over = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "client_share_exceeded" and r.headers["Retry-After"] for r in over)
    history = requests.get(f"{hostile.url}/api/conversations/{conversation_id}", timeout=30).json()["messages"]
    assert len(history) == 2 * (1 + statuses.count(200)), "every answered message, and only those, is kept"


def test_failed_requests_do_not_evict_real_conversations(hostile):
    real = requests.post(hostile.url + "/api/chat", json={"message": "remember me"}, timeout=30).json()
    for _ in range(30):
        assert requests.post(hostile.url + "/api/chat", json={"message": "x" * 3000}, timeout=30).status_code == 400
        assert (
            requests.post(hostile.url + "/api/chat", json={"message": "hello there " * 100}, timeout=30).status_code
            == 400
        )
    found = requests.get(f"{hostile.url}/api/conversations/{real['conversation_id']}", timeout=30)
    assert found.status_code == 200 and found.json()["messages"][0]["content"] == "remember me"


@pytest.mark.parametrize(
    "body",
    [
        '{"message": "\\ud800"}',
        '{"message": "hi", "stop": ["\\udfff"]}',
        '{"\\ud800": 1}',
        '{"message": "hi", "model": "\\ud800"}',
    ],
)
def test_lone_surrogates_get_400(hostile, body):
    response = post_raw_json(hostile, "/api/chat", body)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]


def test_bad_chunked_bodies_get_400_and_oversized_ones_413(hostile):
    host = urlparse(hostile.url).netloc
    head = (
        f"POST /api/chat HTTP/1.1\nHost: {host}\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
        "Connection: close\n"
    )
    status, answer = raw_request(hostile, head, b"zz\r\n{}\r\n0\r\n\r\n")
    assert status == 400 and b'"error"' in answer
    big = json.dumps({"message": "x" * 80000}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i : i + 8000]), big[i : i + 8000]) for i in range(0, len(big), 8000))
    status, answer = raw_request(hostile, head, chunks + b"0\r\n\r\n")
    assert status == 413 and b"at most 65536 bytes" in answer
    good = json.dumps({"message": "hi"}).encode()
    status, answer = raw_request(hostile, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good))
    assert status == 200 and b'"reply"' in answer


def test_oversized_bodies_get_413_with_message_logging_on_and_form_bodies_are_logged(hostile):
    response = requests.post(hostile.url + "/api/chat", data=b"x" * 100000, timeout=30)
    assert response.status_code == 413
    assert requests.post(hostile.url + "/", data={"textbox": "logged form text"}, timeout=30).status_code == 200
    # The line is written when the response closes, after the client has it.
    wait_until(lambda: '"body": "textbox=logged+form+text"' in hostile.log(), 10, "the form body logged")


def test_a_body_shorter_than_its_content_length_gets_an_answer(hostile):
    host = urlparse(hostile.url).netloc
    url = urlparse(hostile.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f'Content-Length: 1000\r\n\r\n{{"message"'.encode()
        )
        sock.shutdown(socket.SHUT_WR)  # the client gives up sending
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer == b"" or int(answer.split(b" ", 2)[1]) < 500
    assert requests.get(hostile.url + "/healthz", timeout=5).status_code == 200


def test_the_request_thread_builds_prompts_not_the_engine(make_engine, chat_model):
    from commons import Message
    from palaver.engine.engine import GenerationRequest

    engine = make_engine(chat_model)
    assert engine.wait_ready(30)
    family, threads = engine.model.family, []
    real_build = family.build_prompt
    family.build_prompt = lambda *args: threads.append(threading.current_thread().name) or real_build(*args)
    engine.generate(GenerationRequest(engine.settings.generation_defaults(), messages=[Message("user", "hi")]))
    assert threads == [threading.current_thread().name] and "palaver-engine" not in threads


def test_anonymous_conversations_from_one_address_evict_only_their_own(gguf_chat_model, tmp_path):
    # On the native step, which starts in seconds: what is checked is the storage, whatever the replies say.
    env = server_env(gguf_chat_model, tmp_path, max_new_tokens="1", max_conversations="30", sweep_interval="1")
    with procfile_server(env, wait_for="/readyz", timeout=120) as server:
        user = client_at("127.0.0.2")
        user.get(server.url + "/", timeout=10)
        mine = user.post(server.url + "/", data={"textbox": "keep me"}, headers={"Accept": "application/json"})
        flood = client_at("127.0.0.3")
        for index in range(60):
            assert flood.post(server.url + "/api/chat", json={"message": f"x{index}"}, timeout=30).status_code == 200

        def swept() -> int:  # the sweep runs every second, so during the flood too
            return sum(int(n) for n in re.findall(r"retention sweep deleted (\d+) conversations", server.log()))

        wait_until(lambda: swept() >= 31, 30, "31 conversations swept", every=0.2)
        assert swept() == 31, "61 conversations, 30 kept"
        kept = user.get(f"{server.url}/api/conversations/{mine.json()['conversation_id']}", timeout=10)
        assert kept.status_code == 200 and kept.json()["messages"][0]["content"] == "keep me"
