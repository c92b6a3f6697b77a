"""Owners: a browser's cookie or an API key owns its conversations, and nobody else can use them."""

import threading

import pytest
import requests
from helpers import assert_error, model_held
from signing_in import CHEAP_HASHER, sign_up

KEYS = "key-one, key-two"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def page_conversation(client):
    with client.session_transaction() as session:
        return session["conversation_id"]


def assert_closed_to(client, conversation_id, headers=None):
    """Check that client can neither list, read, export, rename, continue, cancel nor delete the conversation."""
    headers = headers or {}
    listed = client.get("/api/conversations", headers=headers).get_json()["conversations"]
    assert conversation_id not in [c["conversation_id"] for c in listed]
    url = f"/api/conversations/{conversation_id}"
    assert_error(client.get(url, headers=headers), 404, "conversation_id")
    assert_error(client.get(f"{url}/export?format=markdown", headers=headers), 404, "conversation_id")
    assert_error(client.patch(url, json={"title": "mine now"}, headers=headers), 404, "conversation_id")
    continued = client.post("/api/chat", json={"message": "hi", "conversation_id": conversation_id}, headers=headers)
    assert_error(continued, 404, "conversation_id")
    assert_error(client.post(f"{url}/cancel", headers=headers), 404, "conversation_id")
    assert_error(client.delete(url, headers=headers), 404, "conversation_id")


def assert_page_closed_to(client, conversation_id):
    """Check that client can neither open, continue, rename, delete nor stop the conversation on the page."""
    page = f"/c/{conversation_id}"
    assert client.get(page).status_code == 404
    assert client.post(page, data={"textbox": "mine now"}).status_code == 404
    assert client.post(f"{page}/rename", data={"title": "mine now"}).status_code == 404
    assert client.post(f"{page}/delete", data={"confirm": "yes"}).status_code == 404
    assert client.post(f"{page}/stop").get_json() == {"stopped": False}


def test_a_browsers_conversations_are_closed_to_other_browsers_and_anonymous_callers(app):
    alice = app.test_client()
    alice.post("/", data={"textbox": "alice's secret"})
    on_page = page_conversation(alice)
    by_api = alice.post("/api/chat", json={"message": "also mine"}).get_json()["conversation_id"]
    bob = app.test_client()
    bob.post("/", data={"textbox": "bob's own"})
    for conversation_id in (on_page, by_api):
        assert_closed_to(bob, conversation_id)
        assert_closed_to(app.test_client(use_cookies=False), conversation_id)
        assert_page_closed_to(bob, conversation_id)
        assert_page_closed_to(app.test_client(), conversation_id)
    assert "alice&#39;s secret" not in bob.get("/").get_data(as_text=True)
    listed = alice.get("/api/conversations").get_json()["conversations"]
    assert [c["conversation_id"] for c in listed] == [by_api, on_page]
    assert [m["content"] for m in alice.get(f"/api/conversations/{on_page}").get_json()["messages"]][0] == (
        "alice's secret"
    )


def test_a_page_ignores_a_conversation_id_it_does_not_own(app):
    alice = app.test_client()
    alice.post("/", data={"textbox": "alice's secret"})
    theirs = page_conversation(alice)
    bob = app.test_client()
    bob.post("/", data={"textbox": "hello", "conversation_id": theirs})  # a form field cannot pick the conversation
    assert page_conversation(bob) != theirs
    with bob.session_transaction() as session:  # as if bob held alice's id in his signed cookie
        session["conversation_id"] = theirs
    assert "alice&#39;s secret" not in bob.get("/").get_data(as_text=True)
    assert bob.post("/stop").get_json() == {"stopped": False}
    bob.post("/", data={"textbox": "mine"})
    assert page_conversation(bob) != theirs
    assert len(alice.get(f"/api/conversations/{theirs}").get_json()["messages"]) == 2


def test_a_conversation_started_without_owner_is_opened_by_its_id_alone_and_by_no_one_who_is_someone(app):
    anonymous = app.test_client(use_cookies=False)
    conversation_id = anonymous.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    assert anonymous.get("/api/conversations").get_json() == {"conversations": [], "next_cursor": None}
    assert anonymous.get(f"/api/conversations/{conversation_id}").status_code == 200  # its id opens it
    assert anonymous.post("/api/chat", json={"message": "again", "conversation_id": conversation_id}).status_code == 200
    browser = app.test_client()
    browser.get("/")
    assert browser.get("/api/conversations").get_json()["conversations"] == []  # listed for nobody
    assert_closed_to(browser, conversation_id)  # a browser is someone: an unowned id opens nothing for it
    assert_page_closed_to(browser, conversation_id)
    assert len(anonymous.get(f"/api/conversations/{conversation_id}").get_json()["messages"]) == 4


@pytest.fixture
def keyed(make_app, chat_model):
    return make_app(chat_model, api_keys=KEYS)


def test_with_keys_set_each_key_owns_its_conversations_on_the_page_and_the_api(keyed):
    client = keyed.test_client()
    one = client.post("/api/chat", json={"message": "key one's"}, headers=bearer("key-one")).get_json()
    assert_closed_to(client, one["conversation_id"], bearer("key-two"))
    browser = keyed.test_client()
    browser.post("/key", data={"key": "key-one"})
    browser.post("/", data={"textbox": "from the page"})
    on_page = page_conversation(browser)
    listed = client.get("/api/conversations", headers=bearer("key-one")).get_json()["conversations"]
    assert [c["conversation_id"] for c in listed] == [on_page, one["conversation_id"]]  # the key is the owner
    browser.post("/key", data={"key": "key-two"})
    assert "from the page" not in browser.get("/").get_data(as_text=True)
    assert browser.post("/stop").get_json() == {"stopped": False}


def test_only_the_owner_can_stop_a_running_reply(keyed):
    client = keyed.test_client()
    first = client.post("/api/chat", json={"message": "hello"}, headers=bearer("key-one")).get_json()
    conversation_id, replies = first["conversation_id"], []
    body = {"message": "go on", "conversation_id": conversation_id, "max_new_tokens": 8}

    def send():
        replies.append(keyed.test_client().post("/api/chat", json=body, headers=bearer("key-one")).get_json())

    with model_held(keyed.extensions["palaver"].backend.loaded().model.family.model) as (busy, release):
        sender = threading.Thread(target=send)
        sender.start()
        assert busy.wait(30)
        url = f"/api/conversations/{conversation_id}/cancel"
        assert_error(client.post(url, headers=bearer("key-two")), 404, "conversation_id")
        other_page = keyed.test_client()
        other_page.post("/key", data={"key": "key-two"})
        assert other_page.post(f"/c/{conversation_id}/stop").get_json() == {"stopped": False}
        assert client.post(url, headers=bearer("key-one")).get_json()["stopped"]
        release.set()
        sender.join(30)
    assert replies[0]["finish_reason"] == "cancelled"


def test_with_accounts_a_person_and_an_operators_key_each_own_theirs_and_a_browser_alone_owns_nothing(
    make_app, gguf_chat_model
):
    app = make_app(gguf_chat_model, auth="accounts", api_keys=KEYS)
    app.extensions["palaver"].people.hasher = CHEAP_HASHER
    person = app.test_client()
    sign_up(person, "ada")
    mine = person.post("/api/chat", json={"message": "ada's", "max_new_tokens": 2}).get_json()["conversation_id"]
    keys = app.test_client(use_cookies=False)
    theirs = keys.post("/api/chat", json={"message": "a script's"}, headers=bearer("key-one")).get_json()
    assert_closed_to(person, theirs["conversation_id"])
    assert_closed_to(keys, mine, bearer("key-one"))
    browser = app.test_client()
    assert browser.get("/").status_code == 303 and browser.post("/api/chat", json={"message": "x"}).status_code == 401
    with browser.session_transaction() as session:
        assert "owner" not in session  # no id handed out: without a person, a browser owns nothing


@pytest.mark.server
@pytest.mark.parametrize("keys", [False, True], ids=["no keys", "keys"])
def test_a_link_to_a_strangers_conversation_never_carries_a_visitors_message(request, keys):
    """The issue's sequence: a stranger plants a conversation and sends its link; the visitor opens it and types."""
    base = request.getfixturevalue("keyed_server" if keys else "server")
    attacker = requests.Session()
    attacker_headers = bearer("key-one") if keys else {}
    planted = attacker.post(
        base + "/api/chat", json={"message": "Welcome to support."}, headers=attacker_headers, timeout=30
    )
    conversation_id = planted.json()["conversation_id"]
    visitor = requests.Session()
    if keys:
        visitor.post(base + "/key", data={"key": "key-two"}, timeout=10)
    assert visitor.get(base + "/", timeout=10).status_code == 200
    link = visitor.get(f"{base}/c/{conversation_id}", timeout=10)
    assert link.status_code == 404
    assert "Welcome to support." not in link.text
    assert "Welcome to support." not in visitor.get(base + "/", timeout=10).text
    sent = visitor.post(base + "/", data={"textbox": "my password is hunter2"}, headers=FORM_JSON, timeout=30)
    assert sent.status_code == 200 and sent.json()["conversation_id"] != conversation_id
    posted = visitor.post(f"{base}/c/{conversation_id}", data={"textbox": "hunter2 again"}, timeout=30)
    assert posted.status_code == 404
    read = attacker.get(f"{base}/api/conversations/{conversation_id}", headers=attacker_headers, timeout=10).json()
    assert [m["content"] for m in read["messages"] if m["role"] == "user"] == ["Welcome to support."]
    visitor_headers = bearer("key-two") if keys else {}
    mine = visitor.get(base + "/api/conversations", headers=visitor_headers, timeout=10).json()["conversations"]
    assert [c["conversation_id"] for c in mine] == [sent.json()["conversation_id"]]


FORM_JSON = {"Accept": "application/json"}
