"""The chat page and its form endpoint, as browsers without JavaScript and curl use them."""

import json
import re

import pytest


def messages_on(page: str) -> list[tuple[str, str]]:
    return re.findall(
        r'<article class="message (\w+)">\s*<span class="who">[^<]*</span>\s*<p class="text">(.*?)</p>', page, re.S
    )


def test_the_page_opens_before_the_model_loads(client, app):
    response = client.get("/")
    assert response.status_code == 200 and 'name="textbox"' in response.get_data(as_text=True)
    assert app.extensions["palaver"]["engine"].state == "idle"


def test_posting_the_form_returns_the_page_with_the_reply(client):
    response = client.post("/", data={"textbox": "Hi there"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    roles = [role for role, _ in messages_on(response.get_data(as_text=True))]
    assert roles == ["user", "assistant"]


def test_the_session_cookie_continues_the_conversation(client, app):
    client.post("/", data={"textbox": "first message"})
    page = client.post("/", data={"textbox": "second message"}).get_data(as_text=True)
    shown = messages_on(page)
    assert [role for role, _ in shown] == ["user", "assistant"] * 2
    assert shown[0][1] == "first message" and shown[2][1] == "second message"
    other = app.test_client().get("/").get_data(as_text=True)
    assert messages_on(other) == [], "another browser starts with its own empty conversation"


def test_the_page_script_gets_json(client):
    response = client.post("/", data={"textbox": "hello"}, headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.get_json()["reply"] is not None
    assert len(messages_on(client.get("/").get_data(as_text=True))) == 2


@pytest.mark.parametrize(
    "form, words",
    [
        ({"textbox": "   "}, "must not be empty"),
        ({"textbox": "y" * 2001}, "at most 2000 characters"),
        ({}, "is required"),
        ({"textbox": "hi", "temperature": "hot"}, "temperature"),
        ({"textbox": "hi", "nonsense": "1"}, "unknown field"),
    ],
)
def test_bad_form_input_shows_the_error_and_keeps_the_draft(client, form, words):
    response = client.post("/", data=form)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'<p class="error" id="error" role="alert">[^<]*' + re.escape(words), page)
    assert f">{form.get('textbox', '')}</textarea>" in page
    assert messages_on(page) == [] and "Traceback" not in page


def test_bad_input_from_the_page_script_gets_a_json_error(client):
    response = client.post("/", data={"textbox": ""}, headers={"Accept": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "textbox"


def test_generation_parameters_can_be_posted_as_form_fields(client):
    response = client.post(
        "/",
        data={"textbox": "hello", "temperature": "0", "max_new_tokens": "2"},
        headers={"Accept": "application/json"},
    )
    assert response.get_json()["usage"]["completion_tokens"] <= 2


def test_an_oversized_form_gets_413_on_the_page(make_app, chat_model):
    response = make_app(chat_model, max_body_bytes=500).test_client().post("/", data={"textbox": "z" * 1000})
    assert response.status_code == 413 and "at most 500 bytes" in response.get_data(as_text=True)


def test_html_in_replies_and_messages_is_shown_as_text(make_app, html_model):
    client = make_app(html_model).test_client()
    page = client.post("/", data={"textbox": "<b>bold</b>"}).get_data(as_text=True)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.replace(" ", "")
    assert "<script>alert" not in page and "<b>bold" not in page


def page_owner(session) -> str:
    return f"browser:{session['owner']}"


def test_new_conversation_starts_over_and_keeps_the_old_one(client):
    client.post("/", data={"textbox": "remember me"})
    response = client.post("/new")
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    assert messages_on(client.get("/").get_data(as_text=True)) == []
    assert len(messages_on(client.post("/", data={"textbox": "fresh"}).get_data(as_text=True))) == 2
    listed = client.get("/api/conversations").get_json()["conversations"]
    assert [c["title"] for c in listed] == ["fresh", "remember me"]


def test_an_expired_conversation_cookie_starts_a_new_conversation(client, app):
    client.post("/", data={"textbox": "hello"})
    with client.session_transaction() as session:
        store = app.extensions["palaver"]["chat"].store
        assert store.delete(session["conversation_id"], page_owner(session))  # as the sweep does
    page = client.post("/", data={"textbox": "still here?"}).get_data(as_text=True)
    assert [text for _, text in messages_on(page)][0] == "still here?"


def test_the_page_is_usable_at_mobile_width(client):
    page = client.get("/").get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_unknown_pages_get_a_friendly_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and "Back to the chat" in response.get_data(as_text=True)


def test_the_page_script_streams_deltas_then_the_finished_turn(client):
    response = client.post("/", data={"textbox": "hello"}, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = [json.loads(line[len("data: ") :]) for line in response.get_data(as_text=True).split("\n\n") if line]
    done = events[-1]
    assert done["done"] is True and "".join(e["delta"] for e in events[:-1]) == done["reply"]
    assert len(messages_on(client.get("/").get_data(as_text=True))) == 2


def test_a_streamed_bad_message_gets_a_json_error_status(client):
    response = client.post("/", data={"textbox": " "}, headers={"Accept": "text/event-stream"})
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "textbox"


def test_a_preset_is_chosen_for_a_new_conversation(client, app):
    assert "Text message check" in client.get("/").get_data(as_text=True)
    assert client.post("/new", data={"preset": "text-message-check"}).status_code == 303
    page = client.post("/", data={"textbox": "see you at 8"}).get_data(as_text=True)
    assert 'id="preset-note"' in page and '<option value="text-message-check" selected>' in page
    with client.session_transaction() as session:
        conversation_id, owner = session["conversation_id"], page_owner(session)
    assert app.extensions["palaver"]["chat"].store.get(conversation_id, owner).preset == "text-message-check"
    assert client.post("/new", data={"preset": "nope"}).status_code == 400
