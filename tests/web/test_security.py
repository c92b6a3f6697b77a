"""Keys on every generating surface, page sign-in, rate limits, cross-site and host checks, and headers."""

import base64
import hashlib
import json
import time

import pytest
from flask import url_for
from signing_in import CHEAP_HASHER, bearer, sign_in, sign_up

from palaver.web.headers import CONTENT_SECURITY_POLICY

KEYS = "key-one, key-two"
BEARER = {"Authorization": "Bearer key-one"}


def cookie_payload(client) -> str:
    """Decode the readable part of Flask's signed session cookie."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    payload = cookie.value.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.value.startswith("."):  # compressed
        import zlib

        data = zlib.decompress(data)
    return data.decode()


@pytest.fixture
def keyed(make_app, chat_model):
    return make_app(chat_model, api_keys=KEYS)


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("post", "/", {"data": {"textbox": "hi"}}),
        ("post", "/", {"data": {"textbox": "hi"}, "headers": {"Accept": "text/event-stream"}}),
        ("post", "/", {"data": {"textbox": "hi"}, "headers": {"Accept": "application/json"}}),
        ("post", "/stop", {}),
        ("post", "/new", {}),
        ("get", "/", {}),
        ("post", "/api/chat", {"json": {"message": "hi"}}),
        (
            "post",
            "/v1/chat/completions",
            {"json": {"model": "chat-llama", "messages": [{"role": "user", "content": "x"}]}},
        ),
        ("post", "/v1/completions", {"json": {"model": "chat-llama", "prompt": "x"}}),
        (
            "post",
            "/v1/messages",
            {"json": {"model": "chat-llama", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}},
        ),
        ("post", "/invocations", {"json": {"inputs": ["x"]}}),
    ],
)
def test_with_keys_set_every_generating_surface_needs_one(keyed, method, path, kwargs):
    response = getattr(keyed.test_client(), method)(path, **kwargs)
    assert response.status_code == 401
    headers = {**kwargs.get("headers", {}), **BEARER}
    allowed = getattr(keyed.test_client(), method)(path, **{**kwargs, "headers": headers})
    assert allowed.status_code in (200, 303)


def test_an_x_api_key_header_is_a_key_on_every_surface_as_a_bearer_one_is(keyed):
    chat = {"model": "chat-llama", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    client = keyed.test_client()
    for path in ("/v1/messages", "/v1/chat/completions", "/api/chat"):
        body = chat if path.startswith("/v1") else {"message": "x", "max_new_tokens": 2}
        assert client.post(path, json=body, headers={"x-api-key": "key-two"}).status_code == 200
    refused = client.post("/v1/chat/completions", json=chat, headers={"x-api-key": "key-three"})
    assert refused.status_code == 401 and "x-api-key" in refused.get_json()["error"]["message"]


def test_one_sign_in_keeps_the_page_usable_and_the_mark_is_opaque(keyed):
    client = keyed.test_client()
    locked = client.get("/")
    assert locked.status_code == 401 and 'name="key"' in locked.get_data(as_text=True)
    wrong = client.post("/key", data={"key": "nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.get_data(as_text=True)
    assert client.post("/key", data={"key": "key-two"}).status_code == 303
    for response in (
        client.get("/"),
        client.post("/", data={"textbox": "hi"}),
        client.post("/", data={"textbox": "again"}, headers={"Accept": "text/event-stream"}),
        client.post("/stop"),
    ):
        assert response.status_code == 200
    payload = cookie_payload(client)
    for leak in ("key-two", hashlib.sha256(b"key-two").hexdigest(), hashlib.sha256(b"key-two").hexdigest()[:16]):
        assert leak not in payload, "the cookie says nothing about the key"
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 401, "the API still needs a bearer key"


def test_a_sign_in_expires_and_dies_with_its_key(make_app, chat_model, keyed):
    client = keyed.test_client()
    client.post("/key", data={"key": "key-one"})
    with client.session_transaction() as session:
        session["sign_in"] = {**session["sign_in"], "until": int(time.time()) - 1}
    assert client.get("/").status_code == 401
    client.post("/key", data={"key": "key-one"})
    assert client.get("/").status_code == 200
    rotated = make_app(chat_model, api_keys="key-two", secret_key=keyed.secret_key)
    rotated_client = rotated.test_client()
    rotated_client.set_cookie("session", client.get_cookie("session").value)
    assert rotated_client.get("/").status_code == 401, "a removed key signs nobody in"


def test_metrics_are_off_unless_asked_and_keyed_when_keys_are_set(make_app, chat_model):
    assert make_app(chat_model).test_client().get("/metrics").status_code == 404
    assert make_app(chat_model, metrics=True).test_client().get("/metrics").status_code == 200
    keyed = make_app(chat_model, metrics=True, api_keys=KEYS).test_client()
    assert keyed.get("/metrics").status_code == 401 and keyed.get("/metrics", headers=BEARER).status_code == 200
    assert keyed.get("/healthz").status_code == 200 and keyed.get("/readyz").status_code in (200, 503)


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/v1/chat/completions", "text/plain"),
        ("/v1/completions", "application/x-www-form-urlencoded"),
        ("/invocations", "text/plain"),
        ("/v1/messages", "text/plain"),
        ("/v1/chat/completions", None),
    ],
)
def test_json_only_apis_refuse_other_bodies_with_415(client, path, content_type):
    body = json.dumps({"model": "chat-llama", "messages": [{"role": "user", "content": "x"}], "inputs": ["x"]})
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 415 and "application/json" in response.get_data(as_text=True)


def test_api_chat_takes_plain_curl_but_refuses_other_sites(client):
    assert (
        client.post("/api/chat", data='{"message": "hi"}', content_type="application/x-www-form-urlencoded").status_code
        == 200
    )
    assert client.post("/api/chat", json={"message": "hi"}, headers={"Origin": "http://localhost"}).status_code == 200
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = client.post("/api/chat", json={"message": "hi"}, headers=headers)
        assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "cross_site_request"
    page = client.post("/", data={"textbox": "hi"}, headers={"Origin": "https://evil.example"})
    assert page.status_code == 403


def test_allowed_hosts_refuse_rebinding(make_app, chat_model):
    client = make_app(chat_model, allowed_hosts="chat.example.com, .internal").test_client()
    assert client.get("/", headers={"Host": "chat.example.com"}).status_code == 200
    assert client.get("/", headers={"Host": "a.b.internal:8000"}).status_code == 200
    refused = client.post("/api/chat", json={"message": "hi"}, headers={"Host": "attacker.example"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "host_not_allowed"
    assert client.get("/healthz", headers={"Host": "10.1.2.3"}).status_code == 200, "probes answer any host"


def test_behind_a_trusted_proxy_the_cookie_is_secure_and_urls_are_https(make_app, chat_model):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    trusting = make_app(chat_model, trusted_proxies=1)
    trusting.add_url_rule("/where", "where", lambda: url_for("pages.index", _external=True))
    response = trusting.test_client().post("/", data={"textbox": "hi"}, headers=forwarded)
    assert "Secure" in response.headers["Set-Cookie"]
    assert trusting.test_client().get("/where", headers=forwarded).get_data(as_text=True) == "https://localhost/"
    plain = make_app(chat_model).test_client().post("/", data={"textbox": "hi"}, headers=forwarded)
    assert "Secure" not in plain.headers["Set-Cookie"], "forwarded headers are ignored unless trusted"


def test_every_response_carries_the_security_headers(client):
    for response in (
        client.get("/"),
        client.get("/healthz"),
        client.post("/api/chat", json={}),
        client.get("/no-such-page"),
        client.get("/static/chat.js"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Frame-Options"] == "DENY"
    page = client.get("/")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "<script>" not in page.get_data(as_text=True), "no inline script for the policy to break"


def test_with_accounts_a_persons_browsers_and_keys_count_as_one_caller(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, auth="accounts", rate_limit="3/minute")
    app.extensions["palaver"].people.hasher = CHEAP_HASHER
    laptop, phone = app.test_client(), app.test_client()
    sign_up(laptop, "ada")
    sign_in(phone, "ada")  # the forms count against the address: nobody is signed in yet
    made = laptop.post("/account/keys", data={"name": "script"}).get_data(as_text=True)  # one
    secret = made.split('id="new-key-secret" value="')[1].split('"')[0]
    assert phone.get("/api/conversations").status_code == 200  # two
    assert app.test_client().get("/api/conversations", headers=bearer(secret)).status_code == 200  # three
    refused = laptop.get("/api/conversations")
    assert refused.status_code == 429 and refused.headers["Retry-After"]
