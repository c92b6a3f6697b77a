"""Signing in through a trusted proxy's header: believed from the proxies' addresses only, the person made once."""

import logging

import pytest
from signing_in import sign_up

PROXY, STRANGER, LOGGED_STRANGER = "10.1.2.3", "192.0.2.7", "192.0.2.99"


@pytest.fixture
def header_app(make_app, gguf_chat_model):
    return make_app(
        gguf_chat_model,
        auth="header",
        auth_header="X-Forwarded-Email",
        auth_proxies="127.0.0.1, 10.1.0.0/16",
        admin_emails="boss@example.org",
    )


def from_peer(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_the_proxys_header_names_the_person_who_is_made_once_active_and_keeps_their_conversations(header_app):
    proxy = from_peer(header_app, PROXY)
    ada = {"X-Forwarded-Email": "Ada@Example.com"}
    assert proxy.get("/", headers=ada).status_code == 200
    sent = proxy.post("/api/chat", json={"message": "Hi", "max_new_tokens": 2}, headers=ada)
    assert sent.status_code == 200, sent.get_json()
    listed = proxy.get("/api/conversations", headers={"X-Forwarded-Email": "ada@example.com"}).get_json()
    assert [c["conversation_id"] for c in listed["conversations"]] == [sent.get_json()["conversation_id"]]
    ada_person = header_app.extensions["palaver"].people.by_identity("header:ada@example.com")
    assert ada_person.active and not ada_person.admin  # PALAVER_ADMIN_EMAILS names the admins, not arrival order
    assert proxy.get("/admin/people", headers=ada).status_code == 403
    assert proxy.get("/admin/people", headers={"X-Forwarded-Email": "boss@example.org"}).status_code == 200


def test_the_pages_offer_no_sign_out_which_is_the_proxys_to_do(header_app, accounts_app):
    page = from_peer(header_app, PROXY).get("/", headers={"X-Forwarded-Email": "ada@example.com"})
    shown = page.get_data(as_text=True)
    assert 'id="account-link"' in shown and 'id="sign-out"' not in shown
    with_passwords = accounts_app.test_client()
    sign_up(with_passwords, "ada")
    assert 'id="sign-out"' in with_passwords.get("/").get_data(as_text=True)  # where Palaver signs people in


def test_without_the_header_a_page_answers_401_and_there_is_no_sign_in_page(header_app):
    proxy = from_peer(header_app, PROXY)
    assert proxy.get("/").status_code == 401
    assert proxy.get("/sign-in").status_code == 404
    assert proxy.post("/api/chat", json={"message": "Hi"}).status_code == 401


def test_the_header_from_an_untrusted_peer_is_ignored_and_logged_once(header_app, caplog):
    stranger = from_peer(header_app, LOGGED_STRANGER)  # an address no other test uses: each is logged once a process
    with caplog.at_level(logging.WARNING, logger="palaver"):
        for _ in range(2):
            assert stranger.get("/", headers={"X-Forwarded-Email": "boss@example.org"}).status_code == 401
    assert [r.getMessage() for r in caplog.records if "ignored X-Forwarded-Email" in r.getMessage()] == [
        f"ignored X-Forwarded-Email from {LOGGED_STRANGER}: not one of PALAVER_AUTH_PROXIES"
    ]
    assert header_app.extensions["palaver"].people.by_identity("header:boss@example.org") is None


def test_behind_proxy_fix_the_connections_own_peer_is_checked_not_x_forwarded_for(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, auth="header", auth_header="X-User", auth_proxies=PROXY, trusted_proxies=1)
    forged = {"X-User": "mallory", "X-Forwarded-For": PROXY}
    assert from_peer(app, STRANGER).get("/", headers=forged).status_code == 401
    assert from_peer(app, PROXY).get("/", headers={"X-User": "ada", "X-Forwarded-For": STRANGER}).status_code == 200
