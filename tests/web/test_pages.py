"""The chat page and its form endpoint, as browsers without JavaScript and curl use them."""

import html
import json
import re

import pytest
from helpers import seed_turns


def messages_on(page: str) -> list[tuple[str, str]]:
    return re.findall(
        r'<article class="message (\w+)[^"]*"[^>]*>\s*<span class="who">[^<]*</span>\s*'
        r'<(?:p|div) class="text[^"]*">(.*?)</(?:p|div)>',
        page,
        re.S,
    )


def test_the_page_opens_before_the_model_loads(client, app):
    response = client.get("/")
    assert response.status_code == 200 and 'name="textbox"' in response.get_data(as_text=True)
    assert app.extensions["palaver"].backend.state == "idle"


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
        store = app.extensions["palaver"].chat.store
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
    assert app.extensions["palaver"].chat.store.get(conversation_id, owner).preset == "text-message-check"
    assert client.post("/new", data={"preset": "nope"}).status_code == 400


def started(client, text: str) -> str:
    """Start a conversation on the page; return its id."""
    client.post("/new")
    client.post("/", data={"textbox": text})
    with client.session_transaction() as session:
        return session["conversation_id"]


def sidebar_titles(page: str) -> list[str]:
    listing = page[page.index('id="conversation-list"') :]
    return re.findall(r'<a href="/c/\w+"[^>]*>([^<]*)</a>', listing[: listing.index("</ul>")])


def test_each_conversation_has_an_address_only_its_owner_can_open(client, app):
    first, second = started(client, "about apples"), started(client, "about pears")
    page = client.get(f"/c/{first}").get_data(as_text=True)
    assert [text for role, text in messages_on(page) if role == "user"] == ["about apples"]
    assert sidebar_titles(page) == ["about pears", "about apples"], "newest first"
    assert f'<a href="/c/{first}"\n' in page or f'href="/c/{first}" aria-current="page"' in " ".join(page.split())
    # The form on /c/<id> continues that conversation, whatever the session last opened.
    client.get(f"/c/{second}")
    client.post(f"/c/{first}", data={"textbox": "more apples"})
    users = [
        m["content"] for m in client.get(f"/api/conversations/{first}").get_json()["messages"] if m["role"] == "user"
    ]
    assert users == ["about apples", "more apples"]
    stranger = app.test_client()
    for response in (stranger.get(f"/c/{first}"), stranger.post(f"/c/{first}", data={"textbox": "mine now"})):
        assert response.status_code == 404 and "about apples" not in response.get_data(as_text=True)
    assert client.get("/c/0123456789abcdef").status_code == 404
    assert len(client.get(f"/api/conversations/{first}").get_json()["messages"]) == 4


def test_the_sidebar_searches_titles_and_text(client):
    started(client, "a recipe for bread")
    started(client, "the weather in Oslo")
    started(client, "100% sure")
    assert sidebar_titles(client.get("/?q=OSLO").get_data(as_text=True)) == ["the weather in Oslo"]
    assert sidebar_titles(client.get("/?q=%25").get_data(as_text=True)) == ["100% sure"], "% is not a wildcard"
    assert sidebar_titles(client.get("/?q=zebra").get_data(as_text=True)) == []
    api = client.get("/api/conversations", query_string={"q": "bread"}).get_json()["conversations"]
    assert [c["title"] for c in api] == ["a recipe for bread"]
    bad = client.get("/?q=" + "x" * 201)
    assert bad.status_code == 400 and "'q'" in html.unescape(bad.get_data(as_text=True))


def test_rename_and_delete_work_without_javascript(client):
    conversation_id = started(client, "to be renamed")
    renamed = client.post(f"/c/{conversation_id}/rename", data={"title": "  My   notes "})
    assert renamed.status_code == 303 and renamed.headers["Location"].endswith(f"/c/{conversation_id}")
    assert client.get(f"/api/conversations/{conversation_id}").get_json()["title"] == "My notes"
    blank = client.post(f"/c/{conversation_id}/rename", data={"title": " "})
    assert blank.status_code == 400 and "'title' must not be blank" in html.unescape(blank.get_data(as_text=True))
    unconfirmed = client.post(f"/c/{conversation_id}/delete")
    assert unconfirmed.status_code == 400 and "'confirm'" in html.unescape(unconfirmed.get_data(as_text=True))
    assert client.get(f"/api/conversations/{conversation_id}").status_code == 200
    deleted = client.post(f"/c/{conversation_id}/delete", data={"confirm": "yes"})
    assert deleted.status_code == 303 and client.get(f"/api/conversations/{conversation_id}").status_code == 404
    assert sidebar_titles(client.get("/").get_data(as_text=True)) == []


def stored(client, conversation_id):
    return client.get(f"/api/conversations/{conversation_id}/export").get_json()["messages"]


def test_regenerate_and_edit_replace_the_last_turn_in_storage(client):
    conversation_id = started(client, "first question")
    client.post(f"/c/{conversation_id}", data={"textbox": "second question"})
    before = stored(client, conversation_id)
    regenerate = {"textbox": "second question", "replace_last_turn": "true"}
    assert client.post(f"/c/{conversation_id}", data=regenerate).status_code == 200
    after = stored(client, conversation_id)
    assert [m["role"] for m in after] == ["user", "assistant"] * 2 and after[:2] == before[:2]
    assert after[2]["content"] == "second question" and after[3]["created_at"] > before[3]["created_at"]
    edit = {"textbox": "an edited question", "replace_last_turn": "true", "temperature": "0"}
    client.post(f"/c/{conversation_id}", data=edit)
    edited = stored(client, conversation_id)
    assert [m["content"] for m in edited if m["role"] == "user"] == ["first question", "an edited question"]
    info = client.get(f"/api/conversations/{conversation_id}").get_json()
    assert info["turns"] == 2 and info["title"] == "first question"


def test_replacing_the_first_turn_retitles_until_the_owner_names_it(client):
    conversation_id = started(client, "a typo'd question")
    client.post(f"/c/{conversation_id}", data={"textbox": "a fixed question", "replace_last_turn": "true"})
    assert client.get(f"/api/conversations/{conversation_id}").get_json()["title"] == "a fixed question"
    client.post(f"/c/{conversation_id}/rename", data={"title": "Named"})
    client.post(f"/c/{conversation_id}", data={"textbox": "once more", "replace_last_turn": "true"})
    assert client.get(f"/api/conversations/{conversation_id}").get_json()["title"] == "Named"


def test_nothing_to_replace_is_refused_and_a_failed_regenerate_keeps_the_old_turn(client):
    client.post("/new")
    fresh = client.post(
        "/", data={"textbox": "hi", "replace_last_turn": "true"}, headers={"Accept": "application/json"}
    )
    assert fresh.status_code == 400 and fresh.get_json()["error"]["param"] == "replace_last_turn"
    conversation_id = started(client, "keep me")
    before = stored(client, conversation_id)
    bad = client.post(f"/c/{conversation_id}", data={"textbox": "x", "replace_last_turn": "true", "top_p": "nan"})
    assert bad.status_code == 400 and "top_p" in bad.get_data(as_text=True)
    assert stored(client, conversation_id) == before


def test_a_streamed_reply_ends_with_the_turn_rendered_as_a_reload_shows_it(make_app, markdown_model):
    client = make_app(markdown_model).test_client()
    response = client.post("/", data={"textbox": "<b>hi</b>"}, headers={"Accept": "text/event-stream"})
    events = [json.loads(line[len("data: ") :]) for line in response.get_data(as_text=True).split("\n\n") if line]
    done = events[-1]
    assert done["done"] is True and "<table>" in done["html"] and "&lt;b&gt;hi&lt;/b&gt;" in done["html"]
    reloaded = client.get(f"/c/{done['conversation_id']}").get_data(as_text=True)
    rendered = done["html"][done["html"].index('<div class="text markdown">') :]
    rendered = rendered[: rendered.index("</div>")]
    assert rendered in reloaded, "the same Markdown, rendered the same way"
    assert "<script>alert" not in reloaded and 'href="javascript' not in reloaded and "<img" not in reloaded
    assert re.search(r'<span class="stats">\d+ tokens · [\d.]+ s · [\d.]+ tokens/s</span>', reloaded)


def test_the_page_carries_a_strict_content_security_policy(client):
    headers = client.get("/").headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "same-origin"
    page = client.get("/").get_data(as_text=True)
    assert "<script>" not in page and "<style" not in page and " style=" not in page and " on" + "click" not in page


def test_a_long_conversation_shows_its_latest_turns_and_earlier_ones_a_link_away(client, app):
    client.post("/", data={"textbox": "question 0"})
    with client.session_transaction() as session:
        conversation_id = session["conversation_id"]
    seed_turns(app.extensions["palaver"].chat.store, conversation_id, 119)
    page = client.get(f"/c/{conversation_id}").get_data(as_text=True)
    users = [text for role, text in messages_on(page) if role == "user"]
    assert users == [f"question {turn}" for turn in range(70, 120)]
    assert page.count("Regenerate") == 1 and page.count("Send again") == 1, "only the last turn is redone"
    earlier = html.unescape(re.search(r'id="earlier"><a href="([^"]+)"', page).group(1))
    assert earlier == f"/c/{conversation_id}?before=70" and 'id="later"' not in page
    page = client.get(earlier).get_data(as_text=True)
    assert [text for role, text in messages_on(page) if role == "user"] == [f"question {t}" for t in range(20, 70)]
    assert "Regenerate" not in page and "Send again" not in page
    assert html.unescape(re.search(r'id="later"><a href="([^"]+)"', page).group(1)) == f"/c/{conversation_id}"
    page = client.get(html.unescape(re.search(r'id="earlier"><a href="([^"]+)"', page).group(1))).get_data(as_text=True)
    assert [text for role, text in messages_on(page) if role == "user"] == [f"question {t}" for t in range(20)]
    assert 'id="earlier"' not in page
    assert re.search(r'id="later"><a href="[^"]+before=70"', page), "the next page of fifty"
    refused = client.get(f"/c/{conversation_id}?before=abc")
    assert refused.status_code == 400 and "before" in refused.get_data(as_text=True)
    assert client.get(f"/c/{conversation_id}?utm_source=mail").status_code == 200, "other query fields are ignored"


def test_a_page_of_a_2000_turn_conversation_stays_small(client, app):
    client.post("/", data={"textbox": "hello"})
    with client.session_transaction() as session:
        conversation_id = session["conversation_id"]
    seed_turns(app.extensions["palaver"].chat.store, conversation_id, 1999, reply="x" * 600)
    page = client.get(f"/c/{conversation_id}").get_data()
    assert len(page) < 500_000 and len(messages_on(page.decode())) == 100


GENERATING = [  # every surface that generates, with a body it would otherwise answer
    ("/v1/chat/completions", {"model": "bert", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": "bert", "prompt": "hi"}),
    ("/v1/messages", {"model": "bert", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "bert", "input": "hi"}),
    ("/api/chat", {"model": "bert", "message": "hi"}),
    ("/ollama/api/chat", {"model": "bert", "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("/ollama/api/chat", {"model": "bert"}),  # Ollama refuses even to load an embedding model for a chat
    ("/ollama/api/generate", {"model": "bert:latest", "prompt": "hi", "stream": False}),
]


def test_an_embedding_only_model_is_not_offered_and_every_surface_that_generates_refuses_it(
    make_app, gguf_chat_model, sentence_bert_model
):
    app = make_app(
        gguf_chat_model, models=f"small={gguf_chat_model},bert={sentence_bert_model},other={gguf_chat_model}"
    )
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    picker = re.search(r'<select id="model".*?</select>', page, re.S)
    assert picker and re.findall(r'<option value="([^"]+)"', picker.group()) == ["small", "other"]
    refused = client.post("/", data={"textbox": "hi", "model": "bert"}, headers={"Accept": "application/json"})
    answers = [refused] + [client.post(path, json=body) for path, body in GENERATING]
    for answer in answers:
        assert answer.status_code == 400 and "'bert' only embeds" in answer.get_data(as_text=True), answer.request.path
    unloaded = client.post("/ollama/api/generate", json={"model": "bert", "keep_alive": 0})
    assert unloaded.status_code == 200 and unloaded.get_json()["done_reason"] == "unload", "as `ollama stop` asks"
    assert app.extensions["palaver"].backend.slots["bert"].backend is None, "nothing loaded it"
    listed = [card["id"] for card in client.get("/v1/models").get_json()["data"]]
    assert listed == ["small", "bert", "other"], "listed with the others"
