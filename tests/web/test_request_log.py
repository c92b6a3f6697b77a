"""The request log: one JSON line per request, once its answer is sent, with tokens and latency."""

import json
import logging


def request_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "palaver.requests"]


def test_each_request_is_one_line_with_its_id_surface_status_and_tokens(make_app, chat_model, caplog):
    caplog.set_level(logging.INFO, logger="palaver.requests")
    client = make_app(chat_model).test_client()
    answer = client.post("/api/chat", json={"message": "secret words", "max_new_tokens": 2})
    answer.close()  # the line is written once the answer is sent, as a server closes it
    client.get("/nowhere").close()
    chat, missing = request_lines(caplog)
    assert chat["id"] == answer.headers["X-Request-Id"] and chat["surface"] == "api" and chat["status"] == 200
    assert chat["completion_tokens"] == answer.get_json()["usage"]["completion_tokens"] > 0
    assert chat["latency_ms"] >= 0 and "body" not in chat, "message text stays out of the log unless asked"
    assert missing["status"] == 404 and missing["surface"] == "other"


def test_bodies_are_logged_only_when_asked(make_app, chat_model, caplog):
    caplog.set_level(logging.INFO, logger="palaver.requests")
    make_app(chat_model, log_messages=True).test_client().post("/api/chat", json={"message": "logged words"}).close()
    assert "logged words" in request_lines(caplog)[0]["body"]
