"""Admission control on every surface: past the pending bound, a 429 with Retry-After or a busy page."""

import threading
from collections import Counter

import pytest
from helpers import model_held

from palaver.backends.admission import Admission
from palaver.core.errors import ServerBusy


@pytest.fixture
def busy_app(make_app, chat_model):
    """An app allowed one pending request, whose worker is held busy by one."""
    app = make_app(chat_model, max_pending=1)
    engine = app.extensions["palaver"].backend
    assert engine.wait_ready(30)
    with model_held(engine.loaded().model.family.model) as (busy, release):
        holder = threading.Thread(
            target=app.test_client().post, args=("/api/chat",), kwargs={"json": {"message": "hi"}}
        )
        holder.start()
        assert busy.wait(10)
        yield app
        release.set()
        holder.join(10)


def test_the_json_apis_get_429_with_retry_after(busy_app):
    client = busy_app.test_client()
    chat = {"model": "chat-llama", "messages": [{"role": "user", "content": "hi"}]}
    embedding = {"model": "chat-llama", "input": "hi"}
    for path, body in [("/api/chat", {"message": "hi"}), ("/v1/chat/completions", chat), ("/v1/embeddings", embedding)]:
        response = client.post(path, json=body)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
        assert response.get_json()["error"]["code"] == "server_busy"


def test_mlflow_gets_request_limit_exceeded(busy_app):
    response = busy_app.test_client().post("/invocations", json={"inputs": ["hi"]})
    assert response.status_code == 429 and response.get_json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_the_page_says_busy_and_keeps_the_text(busy_app):
    response = busy_app.test_client().post("/", data={"textbox": "are you there?"})
    page = response.get_data(as_text=True)
    assert response.status_code == 429 and "busy; try again in a few seconds" in page
    assert ">are you there?</textarea>" in page


def test_a_request_of_several_places_takes_them_all_or_none():
    counts = Counter()
    admission = Admission(3, counts)
    admission.admit(2)  # an embedding of two inputs
    with pytest.raises(ServerBusy):
        admission.admit(2)
    assert admission.pending == 2 and counts["refused_busy"] == 1
    admission.admit()
    admission.finished(2)
    admission.finished()
    assert admission.pending == 0
