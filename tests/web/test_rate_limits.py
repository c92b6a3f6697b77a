"""Rate limits: requests and tokens per caller, reserved when admitted, and probes that are never limited."""

import threading

from helpers import model_held
from timing import wait_until

KEYS = "key-one, key-two"
BEARER = {"Authorization": "Bearer key-one"}


def test_failed_sign_ins_are_throttled_per_address(make_app, chat_model):
    client = make_app(chat_model, api_keys=KEYS, sign_in_attempts="3/minute").test_client()
    statuses = [client.post("/key", data={"key": f"guess{n}"}).status_code for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    throttled = client.post("/key", data={"key": "key-one"})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert 'name="key"' in throttled.get_data(as_text=True), "the key form, never the chat, before sign-in"
    other = client.post("/key", data={"key": "key-one"}, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert other.status_code == 303, "another address is not punished"


def test_requests_per_minute_are_limited_per_key_or_address(make_app, chat_model):
    app = make_app(chat_model, rate_limit="3/minute", api_keys=KEYS)
    client = app.test_client()
    statuses = [client.post("/api/chat", json={"message": "hi"}, headers=BEARER).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.post("/api/chat", json={"message": "hi"}, headers=BEARER)
    assert refused.headers["Retry-After"].isdigit() and refused.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert "3 requests per 1 minute" in refused.get_json()["error"]["message"]
    assert (
        client.post("/api/chat", json={"message": "hi"}, headers={"Authorization": "Bearer key-two"}).status_code == 200
    ), "each key has its own budget"
    assert client.get("/healthz").status_code == 200, "probes are never limited"
    mlflow = client.post("/invocations", json={"inputs": ["x"]}, headers=BEARER)
    assert mlflow.status_code == 429 and mlflow.get_json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_the_request_limit_holds_across_threads(make_app, chat_model):
    client_app = make_app(chat_model, rate_limit="10/minute", client_share=0)
    statuses: list[int] = []

    def ask():
        statuses.append(client_app.test_client().get("/api/schema").status_code)

    threads = [threading.Thread(target=ask) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 10 + [429] * 15


def test_generated_tokens_per_minute_are_limited(make_app, chat_model):
    client = make_app(chat_model, token_rate_limit="10/minute", max_new_tokens=4).test_client()
    spent, statuses = 0, []
    for _ in range(8):
        response = client.post("/api/chat", json={"message": "tell me a story", "max_new_tokens": 4})
        statuses.append(response.status_code)
        if response.status_code == 200:
            spent += response.get_json()["usage"]["completion_tokens"]
        else:
            assert "reserves 4" in response.get_json()["error"]["message"]
    assert 429 in statuses and spent <= 10, "a request is refused once the budget has no room for its max tokens"
    assert statuses[statuses.index(429) :] == [429] * (len(statuses) - statuses.index(429))


def test_the_token_limit_holds_for_requests_that_arrive_together(make_app, chat_model):
    app = make_app(chat_model, token_rate_limit="300/minute", max_batch_size=32, client_share=0)
    assert app.extensions["palaver"].backend.wait_ready(30)
    statuses: list[int] = []

    def ask():
        answer = app.test_client().post("/api/chat", json={"message": "a long story", "max_new_tokens": 128})
        statuses.append(answer.status_code)

    with model_held(app.extensions["palaver"].backend.loaded().model.family.model) as (busy, release):
        threads = [threading.Thread(target=ask) for _ in range(16)]
        for thread in threads:
            thread.start()
        assert busy.wait(30)
        wait_until(lambda: len(statuses) == 14, 30, "the 14 refused answered at once, while two wait")
        release.set()
        for thread in threads:
            thread.join(60)
    assert sorted(statuses) == [200] * 2 + [429] * 14, "each admitted request reserved its 128 tokens up front"
    after = app.test_client().post("/api/chat", json={"message": "hi", "max_new_tokens": 8})
    assert after.status_code == 200, "what the two replies did not use was given back"


def test_health_probes_are_never_rate_limited(make_app, chat_model):
    client = make_app(chat_model, rate_limit="2/minute").test_client()
    statuses = [client.get(path).status_code for path in ("/healthz", "/readyz", "/ping") for _ in range(5)]
    assert 429 not in statuses
    assert client.get("/api/schema").status_code == 200, "the probes spent none of the address's budget"
