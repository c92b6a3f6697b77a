"""Share links through Flask's test client: made, listed and revoked by the owner only, opened read-only by anyone
who may use the page, and continued as the visitor's own copy."""

import re

import pytest
from stored import store_turn

XSS_QUESTION = "<script>alert(1)</script>"
XSS_ANSWER = "<img src=x onerror=alert(2)> [run](javascript:alert(3)) **bold**"


@pytest.fixture
def app(make_app, gguf_chat_model):
    return make_app(gguf_chat_model)


def browser(app):
    """Return a test client that has opened the page, and the owner it is."""
    client = app.test_client()
    client.get("/")
    with client.session_transaction() as session:
        return client, f"browser:{session['owner']}"


@pytest.fixture
def shared(app):
    """An owner's browser, its conversation of one turn holding XSS payloads, and a link made through the API."""
    owner, owner_id = browser(app)
    store = app.extensions["palaver"].chat.store
    store_turn(store, "c1", XSS_QUESTION, XSS_ANSWER, owner=owner_id)
    made = owner.post("/api/conversations/c1/shares")
    assert made.status_code == 201, made.get_data(as_text=True)
    return owner, owner_id, store, made.get_json()


def path_of(url: str) -> str:
    return url.removeprefix("http://localhost")


def test_a_link_shows_the_snapshot_read_only_and_nothing_said_after_it(app, shared):
    owner, owner_id, store, made = shared
    assert re.fullmatch(r"http://localhost/s/[A-Za-z0-9_-]{43}", made["url"]) and made["url"].endswith(made["token"])
    assert re.fullmatch(r"[0-9a-f]{16}", made["id"]) and made["conversation_id"] == "c1"
    store_turn(store, "c1", "said after sharing", "a later answer", owner=owner_id)
    visitor, _ = browser(app)
    answer = visitor.get(path_of(made["url"]))
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    policy = answer.headers["Content-Security-Policy"]
    # The token in the address never leaves for another site: the policy sends it to this server only.
    assert answer.headers["Referrer-Policy"] == "same-origin" and "script-src 'self'" in policy
    assert "said after sharing" not in page and "a later answer" not in page
    assert 'id="continue-shared"' in page and "textbox" not in page and "Regenerate" not in page
    assert "<script>alert" not in page and "<img" not in page and 'href="javascript' not in page, "XSS stays text"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<strong>bold</strong>" in page


def test_a_revoked_link_is_a_404_like_an_unknown_one_and_only_the_owner_lists_and_revokes(app, shared):
    owner, _, _, made = shared
    stranger, _ = browser(app)
    listed = owner.get("/api/conversations/c1/shares").get_json()["shares"]
    assert [share["id"] for share in listed] == [made["id"]] and made["token"] not in str(listed)
    assert stranger.get("/api/conversations/c1/shares").status_code == 404
    assert stranger.post("/api/conversations/c1/shares").status_code == 404
    assert stranger.delete(f"/api/shares/{made['id']}").status_code == 404
    assert stranger.post(f"/c/c1/shares/{made['id']}/revoke").status_code == 404
    assert stranger.post("/c/c1/share").status_code == 404
    assert stranger.get(path_of(made["url"])).status_code == 200, "the link still works"
    revoked = owner.delete(f"/api/shares/{made['id']}")
    assert revoked.status_code == 200 and revoked.get_json() == {"id": made["id"], "revoked": True}
    assert owner.delete(f"/api/shares/{made['id']}").status_code == 404
    assert owner.get("/api/conversations/c1/shares").get_json() == {"shares": []}
    gone, unknown = stranger.get(path_of(made["url"])), stranger.get("/s/" + "A" * 43)
    assert gone.status_code == unknown.status_code == 404 and gone.get_data() == unknown.get_data()
    assert stranger.post(path_of(made["url"]) + "/continue").status_code == 404


def test_a_conversation_nobody_owns_cannot_be_shared(app):
    store_turn(app.extensions["palaver"].chat.store, "open", "hello")  # as /api/chat makes it without key or cookie
    refused = app.test_client().post("/api/conversations/open/shares")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "no_owner"


def test_a_visitor_continues_the_snapshot_as_a_conversation_of_their_own(app, shared):
    owner, owner_id, store, made = shared
    visitor, visitor_id = browser(app)
    continued = visitor.post(path_of(made["url"]) + "/continue")
    assert continued.status_code == 303
    copied = continued.headers["Location"].rsplit("/", 1)[1]
    assert copied != "c1" and visitor.get(f"/c/{copied}").status_code == 200
    assert owner.get(f"/c/{copied}").status_code == 404, "the copy is the visitor's alone"
    assert [c["conversation_id"] for c in visitor.get("/api/conversations").get_json()["conversations"]] == [copied]
    sent = visitor.post(f"/c/{copied}", data={"textbox": "my own follow-up"}, headers={"Accept": "application/json"})
    assert sent.status_code == 200 and store.get(copied, visitor_id).turns == 2
    original = owner.get("/api/conversations/c1").get_json()["messages"]
    assert [m["content"] for m in original] == [XSS_QUESTION, XSS_ANSWER], "the original is untouched"
    refused = visitor.post(path_of(made["url"]) + "/continue", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403, "a cross-site form cannot plant a copy"


def test_without_javascript_the_owner_makes_sees_once_and_revokes_a_link_from_the_page(app):
    owner, owner_id = browser(app)
    store_turn(app.extensions["palaver"].chat.store, "c1", "hello", "hi", owner=owner_id)
    made = owner.post("/c/c1/share")
    page = made.get_data(as_text=True)
    link = re.search(r'id="share-url" value="(http://localhost/s/[^"]+)"', page)
    assert made.status_code == 200 and link and '<details class="share" id="share" open>' in page
    shown = owner.get("/c/c1").get_data(as_text=True)
    assert link[1] not in shown and "Link made" in shown, "listed, never shown again"
    share_id = re.search(r'action="/c/c1/shares/([0-9a-f]{16})/revoke"', shown)[1]
    revoked = owner.post(f"/c/c1/shares/{share_id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["Location"] == "/c/c1"
    assert owner.get(path_of(link[1])).status_code == 404 and "Link made" not in owner.get("/c/c1").get_data(True)


def test_with_keys_a_link_opens_for_a_signed_in_browser_only(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, api_keys="key-one")
    keyed = {"Authorization": "Bearer key-one"}
    chat = app.test_client().post("/api/chat", json={"message": "hello", "max_new_tokens": 2}, headers=keyed)
    made = app.test_client().post(f"/api/conversations/{chat.get_json()['conversation_id']}/shares", headers=keyed)
    assert made.status_code == 201
    stranger = app.test_client()
    assert stranger.get(path_of(made.get_json()["url"])).status_code == 401
    stranger.post("/key", data={"key": "key-one"})
    assert stranger.get(path_of(made.get_json()["url"])).status_code == 200
