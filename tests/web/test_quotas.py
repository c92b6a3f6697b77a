"""Quotas at the door, through Flask's test client: a person's models, requests a minute and tokens a day, refused
on every surface in its own error shape; what replies spend recorded per model once they settle."""

import re

import pytest
from signing_in import CHEAP_HASHER, bearer, sign_up
from timing import wait_until

from palaver.storage.quotas import Quota

CHAT = {"message": "hi", "max_new_tokens": 4}


@pytest.fixture
def quota_app(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, auth="accounts")
    app.extensions["palaver"].people.hasher = CHEAP_HASHER
    return app


@pytest.fixture
def ada(quota_app):
    """The admin's browser, and an API key of theirs."""
    client = quota_app.test_client()
    assert sign_up(client, "ada").status_code == 303
    made = client.post("/account/keys", data={"name": "script"}).get_data(as_text=True)
    client.key = re.search(r'id="new-key-secret" value="([^"]+)"', made).group(1)
    return client


def quotas(app):
    return app.extensions["palaver"].quotas.store


def person_id(app, login: str) -> str:
    return app.extensions["palaver"].people.by_login(login).id


def test_a_spent_daily_token_quota_is_refused_on_every_surface_in_its_own_shape(quota_app, ada):
    quotas(quota_app).set(f"person:{person_id(quota_app, 'ada')}", Quota(tokens_per_day=2))
    assert ada.post("/api/chat", json=CHAT).status_code == 200, "a reply that starts within the quota finishes"
    message = "your daily token quota of 2 is used up; it resets at 00:00 UTC"
    key = bearer(ada.key)
    refused = {
        "api": ada.post("/api/chat", json=CHAT),
        "v1": ada.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}, headers=key
        ),
        "anthropic": ada.post(
            "/v1/messages", json={"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}, headers=key
        ),
        "responses": ada.post("/v1/responses", json={"input": "hi", "max_output_tokens": 4}, headers=key),
        "ollama": ada.post("/ollama/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}, headers=key),
        "mlflow": ada.post("/invocations", json={"prompt": "hi", "max_tokens": 3}, headers=key),
        "page": ada.post("/", data={"message": "hi"}, headers={"Accept": "text/html"}),
    }
    for surface, answer in refused.items():
        assert answer.status_code == 429, surface
        assert 0 < int(answer.headers["Retry-After"]) <= 86400, surface
        assert message in answer.get_data(as_text=True), surface
    assert refused["v1"].get_json()["error"]["code"] == "quota_exceeded"
    assert refused["anthropic"].get_json()["error"]["type"] == "rate_limit_error"
    assert refused["ollama"].get_json()["error"] == message
    assert refused["mlflow"].get_json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert refused["page"].mimetype == "text/html"


def test_a_model_the_quota_does_not_allow_is_refused_naming_the_model_and_those_allowed(quota_app, ada):
    group = quotas(quota_app).groups.create("class")
    quotas(quota_app).groups.add(group.id, person_id(quota_app, "ada"))
    quotas(quota_app).set(group.subject, Quota(models=("another-model",)))
    model = quota_app.extensions["palaver"].backend.names[0]
    for answer in (
        ada.post("/api/chat", json=CHAT),
        ada.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer(ada.key),
        ),
    ):
        assert answer.status_code == 403
        error = answer.get_json()["error"]
        assert error["code"] == "model_not_allowed" and f"'{model}'" in error["message"]
        assert "'another-model'" in error["message"]
    quotas(quota_app).set(f"person:{person_id(quota_app, 'ada')}", Quota(models=(model,)))
    assert ada.post("/api/chat", json=CHAT).status_code == 200, "a person's own list wins over their group's"


def test_requests_a_minute_are_counted_per_person_whoever_key_or_browser_sends_them(quota_app, ada):
    quotas(quota_app).set(f"person:{person_id(quota_app, 'ada')}", Quota(requests_per_minute=2))
    assert ada.post("/api/chat", json=CHAT).status_code == 200
    assert ada.post("/api/chat", json=CHAT, headers=bearer(ada.key)).status_code == 200
    refused = ada.post("/api/chat", json=CHAT)
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert "your quota of 2 requests a minute is used up" in refused.get_json()["error"]["message"]
    assert ada.get("/api/conversations").status_code == 200, "only requests that generate count"


def test_what_replies_spend_is_recorded_per_model_and_shown_to_the_person_and_the_admin(quota_app, ada):
    answers = [ada.post("/api/chat", json=CHAT).get_json() for _ in range(2)]
    spent = sum(answer["usage"]["completion_tokens"] for answer in answers)
    usage, me = quotas(quota_app).usage, person_id(quota_app, "ada")
    wait_until(lambda: usage.tokens(me) == (spent, spent), 10, "the replies' usage settled")
    (row,) = usage.report(me)
    assert row.model == quota_app.extensions["palaver"].backend.names[0] and row.requests_today == 2
    assert f"<td>{spent:,}</td>" in ada.get("/account").get_data(as_text=True)
    assert f'class="tokens-today">{spent:,}<' in ada.get("/admin/usage").get_data(as_text=True)


def test_without_accounts_nothing_is_counted(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model)
    assert app.test_client().post("/api/chat", json=CHAT).status_code == 200
    assert quotas(app).usage.report() == []
