"""The conversation API: listing an owner's conversations in pages, rename, export and delete."""

import base64
import threading

import pytest
import sqlalchemy as sa
from helpers import assert_error, model_held, start_conversation


def test_the_list_pages_newest_first_without_loss_or_repeats(browser):
    started = [start_conversation(browser, f"talk {n}") for n in range(4)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = browser.get("/api/conversations", query_string=query).get_json()
        seen += page["conversations"]
        pages, cursor = pages + 1, page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and [c["conversation_id"] for c in seen][:4] == started[::-1]
    assert [c["title"] for c in seen] == ["talk 3", "talk 2", "talk 1", "talk 0", "first"]
    assert set(seen[0]) == {"conversation_id", "title", "preset", "model", "turns", "created_at", "updated_at"}
    assert seen[0]["turns"] == 1 and seen[0]["updated_at"].endswith("Z")


def test_continuing_a_conversation_moves_it_to_the_top(browser):
    older, newer = start_conversation(browser, "older"), start_conversation(browser, "newer")
    browser.post("/api/chat", json={"message": "back again", "conversation_id": older, "max_new_tokens": 2})
    listed = [c["conversation_id"] for c in browser.get("/api/conversations").get_json()["conversations"]]
    assert listed[:2] == [older, newer]


@pytest.mark.parametrize(
    "query, param, words",
    [
        ({"limit": "0"}, "limit", ["at least 1"]),
        ({"limit": "101"}, "limit", ["at most 100"]),
        ({"limit": "many"}, "limit", ["integer"]),
        ({"cursor": "not-a-cursor"}, "cursor", ["next_cursor"]),
        ({"cursor": "x" * 500}, "cursor", ["200"]),
        ({"sort": "title"}, "sort", ["unknown field", "limit, cursor"]),
    ],
)
def test_a_bad_list_query_names_the_parameter(browser, query, param, words):
    assert_error(browser.get("/api/conversations", query_string=query), 400, param, *words)


def test_rename_changes_the_title_everywhere(browser):
    conversation_id = start_conversation(browser, "untitled")
    url = f"/api/conversations/{conversation_id}"
    renamed = browser.patch(url, json={"title": "  Trip   to\nLisbon "})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Trip to Lisbon"
    assert browser.get(url).get_json()["title"] == "Trip to Lisbon"
    assert browser.get("/api/conversations").get_json()["conversations"][0]["title"] == "Trip to Lisbon"


@pytest.mark.parametrize(
    "body, words",
    [
        ({"title": " \n "}, ["blank"]),
        ({"title": "x" * 201}, ["200"]),
        ({"title": "bell\x07"}, ["control characters"]),
        ({"title": 7}, ["string"]),
        ({}, ["required"]),
    ],
)
def test_a_bad_title_is_refused_and_the_old_one_kept(browser, body, words):
    conversation_id = start_conversation(browser, "keep me")
    url = f"/api/conversations/{conversation_id}"
    assert_error(browser.patch(url, json=body), 400, "title", *words)
    assert browser.get(url).get_json()["title"] == "keep me"


def test_delete_really_deletes(browser, app):
    conversation_id = start_conversation(browser, "forget me")
    assert browser.delete(f"/api/conversations/{conversation_id}").get_json()["deleted"]
    listed = [c["conversation_id"] for c in browser.get("/api/conversations").get_json()["conversations"]]
    assert conversation_id not in listed
    with app.extensions["palaver"].chat.store.engine.connect() as connection:
        left = connection.execute(
            sa.text("SELECT count(*) FROM messages WHERE conversation_id = :id"), {"id": conversation_id}
        )
        assert left.scalar() == 0


def test_a_conversation_deleted_while_it_replies_does_not_come_back(browser, app):
    conversation_id = start_conversation(browser, "hello")
    body = {"message": "go on", "conversation_id": conversation_id, "max_new_tokens": 8}
    same_browser, replies = app.test_client(), []
    same_browser.set_cookie("session", browser.get_cookie("session").value)
    with model_held(app.extensions["palaver"].backend.loaded().model.family.model) as (busy, release):
        sender = threading.Thread(target=lambda: replies.append(same_browser.post("/api/chat", json=body)))
        sender.start()
        assert busy.wait(30)
        assert browser.delete(f"/api/conversations/{conversation_id}").status_code == 200
        release.set()
        sender.join(30)
    assert replies[0].status_code == 200
    assert_error(browser.get(f"/api/conversations/{conversation_id}"), 404, "conversation_id")


HOSTILE_IDS = ["a%00b", "%ED%A0%80", "x" * 65, "..%2F..", "a%20b"]


def test_ids_and_cursors_that_cannot_exist_never_reach_the_database(make_app, chat_model, database_url):
    # PostgreSQL answers a NUL in text with an error, not a miss: each must be a 404 or a 400 before any query.
    client = make_app(chat_model, database_url=database_url).test_client()
    client.post("/", data={"textbox": "hi"})
    for raw in HOSTILE_IDS:
        for method, path in [
            ("GET", "/c/{}"),
            ("POST", "/c/{}"),
            ("POST", "/c/{}/stop"),
            ("POST", "/c/{}/rename"),
            ("POST", "/c/{}/delete"),
            ("GET", "/api/conversations/{}"),
            ("PATCH", "/api/conversations/{}"),
            ("DELETE", "/api/conversations/{}"),
            ("GET", "/api/conversations/{}/export"),
            ("POST", "/api/conversations/{}/cancel"),
        ]:
            body = {"json": {"title": "t"}} if method == "PATCH" else {"data": {"textbox": "x", "confirm": "yes"}}
            response = client.open(path.format(raw), method=method, **(body if method != "GET" else {}))
            assert response.status_code == 404, (method, path, raw, response.status_code)
            assert "Traceback" not in response.get_data(as_text=True)
    for conversation_id in ["a\x00b", "a b", "é"]:
        assert_error(client.post("/api/chat", json={"message": "x", "conversation_id": conversation_id}), 400,
                     "conversation_id", "letters, digits")  # fmt: skip
    cursor = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|a\x00b").decode()
    assert_error(client.get("/api/conversations", query_string={"cursor": cursor}), 400, "cursor")
    assert client.get("/api/conversations").status_code == 200, "the database is still answering"
