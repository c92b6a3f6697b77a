"""The JSON API, health checks and the error envelope, through Flask's test client."""

import json
import logging
import threading

import pytest
from helpers import assert_error, count_grammar_work, raising
from timing import wait_until

from palaver.core.parameters import PARAMETER_NAMES
from palaver.engine.torch.loading import load_model


def chat(client, **body):
    return client.post("/api/chat", json=body)


def test_chat_returns_a_reply_and_continues_the_conversation(client):
    first = chat(client, message="hello there")
    assert first.status_code == 200
    body = first.get_json()
    assert set(body) == {"reply", "reasoning", "conversation_id", "model", "usage", "truncated_turns", "finish_reason"}
    assert body["reasoning"] == "", "a model that does not think has no reasoning"
    assert body["model"] == "chat-llama"
    assert body["usage"]["completion_tokens"] >= 1 and body["truncated_turns"] == 0
    second = chat(client, message="and again", conversation_id=body["conversation_id"]).get_json()
    assert second["conversation_id"] == body["conversation_id"]
    assert second["usage"]["prompt_tokens"] > body["usage"]["prompt_tokens"], "history reached the model"
    history = client.get(f"/api/conversations/{body['conversation_id']}").get_json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == "hello there" and history[3]["content"] == second["reply"]


def test_a_thinking_models_turn_keeps_its_reasoning_apart_and_out_of_the_next_prompt(make_app, thinking_gguf_model):
    client = make_app(thinking_gguf_model).test_client()
    first = chat(client, message="hello there").get_json()
    assert (first["reply"], first["reasoning"]) == ("the answer", "some thought")
    conversation_id = first["conversation_id"]
    second = chat(client, message="and again", conversation_id=conversation_id).get_json()
    answers = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "the answer"},
        {"role": "user", "content": "and again"},
    ]
    prompt = client.post("/tokenize", json={"messages": answers}).get_json()["count"]
    assert second["usage"]["prompt_tokens"] == prompt, "the history holds the answer, never the thinking"
    third = chat(client, message="once more", conversation_id=conversation_id, thinking=False).get_json()
    assert (third["reply"], third["reasoning"]) == ("the answer", ""), "thinking turned off for this turn"
    history = client.get(f"/api/conversations/{conversation_id}").get_json()["messages"]
    assert history[1] == {"role": "assistant", "content": "the answer", "reasoning": "some thought"}
    assert history[5] == {"role": "assistant", "content": "the answer"}
    exported = json.loads(client.get(f"/api/conversations/{conversation_id}/export").get_data())
    assert [m["reasoning"] for m in exported["messages"]] == ["", "some thought", "", "some thought", "", ""]


def test_a_message_with_a_nul_character_is_refused_before_it_reaches_the_model(client):
    assert_error(chat(client, message="a\x00b"), 400, "message", "NUL")


def test_new_conversations_get_distinct_ids(client):
    ids = {chat(client, message=text).get_json()["conversation_id"] for text in ("a", "b")}
    assert len(ids) == 2


def test_a_conversation_can_be_forgotten(client):
    conversation_id = chat(client, message="hello").get_json()["conversation_id"]
    assert client.delete(f"/api/conversations/{conversation_id}").status_code == 200
    assert_error(client.get(f"/api/conversations/{conversation_id}"), 404, "conversation_id")
    assert_error(chat(client, message="hi", conversation_id=conversation_id), 404, "conversation_id", "expired")


def test_truncated_turns_are_reported_when_history_overflows(make_app, chat_model):
    client = make_app(chat_model, max_context_tokens=80).test_client()
    conversation_id = None
    for _ in range(6):
        body = chat(client, message="tell me a story about a cat", conversation_id=conversation_id).get_json()
        conversation_id = body["conversation_id"]
    assert body["truncated_turns"] > 0 and body["truncated_turns"] % 2 == 0


def test_generation_parameters_apply_per_request(client):
    body = chat(
        client,
        message="hello",
        max_new_tokens=3,
        temperature=0,
        top_k=5,
        top_p=0.5,
        repetition_penalty=1.2,
        do_sample=True,
        seed=1,
    ).get_json()
    assert 1 <= body["usage"]["completion_tokens"] <= 3


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"message": "   "}, "message", ["must not be empty"]),
        ({"message": "x" * 2001}, "message", ["at most 2000 characters"]),
        ({"message": ["hi"]}, "message", ["must be a string"]),
        ({}, "message", ["required"]),
        ({"message": "hi", "temperature": 3}, "temperature", ["at least 0.0 and at most 2.0"]),
        ({"message": "hi", "top_p": 0}, "top_p", ["greater than 0.0"]),
        ({"message": "hi", "max_new_tokens": "ten"}, "max_new_tokens", ["an integer", "at most 1024"]),
        ({"message": "hi", "do_sample": "no"}, "do_sample", ["true or false"]),
        ({"message": "hi", "seed": -5}, "seed", ["at least 0"]),
        ({"message": "hi", "stream": True}, "stream", ["unknown field"]),
        ({"message": "hi", "conversation_id": 12}, "conversation_id", ["string"]),
    ],
)
def test_bad_input_gets_400_naming_the_field(client, body, param, words):
    assert_error(chat(client, **body), 400, param, *words)


@pytest.mark.parametrize("data", [b"not json", b'{"message": ', b"\xff\xfe", b""])
def test_a_body_that_is_not_json_gets_400(client, data):
    assert_error(client.post("/api/chat", data=data, content_type="application/json"), 400, None, "valid JSON")


@pytest.mark.parametrize("body", ["[1, 2]", '"hello"', "42", "null", "true"])
def test_json_of_the_wrong_type_gets_400(client, body):
    assert_error(client.post("/api/chat", data=body, content_type="application/json"), 400, None, "JSON object")


def test_json_is_accepted_whatever_the_content_type_says(client):
    response = client.post("/api/chat", data='{"message": "hi"}', content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200


def test_an_oversized_body_gets_413(make_app, chat_model):
    client = make_app(chat_model, max_body_bytes=1000).test_client()
    response = client.post("/api/chat", json={"message": "x" * 2000})
    assert_error(response, 413, None, "at most 1000 bytes")


def test_temperature_zero_is_greedy_not_an_error(client):
    replies = {chat(client, message="hello", temperature=0, do_sample=True).get_json()["reply"] for _ in range(2)}
    assert len(replies) == 1


def test_schema_publishes_the_request_and_response_models_with_this_servers_defaults(client):
    schema = client.get("/api/schema").get_json()
    properties = schema["request"]["properties"]
    fields = {"message", "conversation_id", "preset", "model", "replace_last_turn", "response_format", "thinking"}
    fields |= set(PARAMETER_NAMES)
    assert set(properties) == fields
    assert properties["temperature"]["default"] == 0.0  # the test app's default, not the model's None
    assert properties["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 2.0}
    assert properties["message"]["maxLength"] == 2000 and schema["request"]["required"] == ["message"]
    assert {"reply", "conversation_id", "usage", "truncated_turns"} <= set(schema["response"]["properties"])
    assert schema["model"]["state"] and isinstance(schema["presets"], list)
    chat_completions = schema["openai"]["chat_completions"]["properties"]
    for name in ("tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "n", "response_format"):
        assert chat_completions[name]["description"], name
    assert chat_completions["top_logprobs"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 20}
    assert schema["openai"]["completions"]["properties"]["logprobs"]["anyOf"][0]["maximum"] == 20


def test_replace_last_turn_regenerates_in_place(client):
    refused = chat(client, message="hello", replace_last_turn=True)
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "replace_last_turn"
    conversation_id = chat(client, message="hello").get_json()["conversation_id"]
    chat(client, message="again", conversation_id=conversation_id)
    replaced = chat(client, message="again, differently", conversation_id=conversation_id, replace_last_turn=True)
    assert replaced.status_code == 200
    messages = client.get(f"/api/conversations/{conversation_id}").get_json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "again, differently"]
    wrong_type = chat(client, message="x", conversation_id=conversation_id, replace_last_turn="yes")
    assert wrong_type.status_code == 400 and wrong_type.get_json()["error"]["param"] == "replace_last_turn"


def test_a_generation_failure_is_a_500_without_a_stack_trace_and_keeps_history(client, app, caplog):
    conversation_id = chat(client, message="hello").get_json()["conversation_id"]
    model = app.extensions["palaver"].backend.loaded().model.family.model.module
    model.forward = raising(ValueError("tensor shape secret"))
    try:
        response = chat(client, message="this one fails", conversation_id=conversation_id)
    finally:
        del model.forward
    assert_error(response, 500, None, "error has been logged")
    assert "tensor shape secret" not in response.get_data(as_text=True)
    assert "tensor shape secret" in caplog.text
    history = client.get(f"/api/conversations/{conversation_id}").get_json()["messages"]
    assert [m["content"] for m in history][0] == "hello" and len(history) == 2


def test_an_unexpected_error_in_a_view_is_a_generic_500(client, app, caplog):
    app.extensions["palaver"].chat.send = lambda *args, **kwargs: 1 / 0
    response = chat(client, message="hello")
    assert_error(response, 500, None, "internal server error")
    assert "ZeroDivisionError" in caplog.text and "ZeroDivision" not in response.get_data(as_text=True)


def test_html_in_a_reply_is_returned_verbatim_as_json(make_app, html_model):
    body = chat(make_app(html_model).test_client(), message="hello").get_json()
    assert "<script>" in body["reply"]


def test_unknown_api_routes_and_methods_answer_in_json(client):
    assert_error(client.get("/api/nothing"), 404, None)
    assert_error(client.get("/api/chat"), 405, None)


def test_health_is_up_at_once_and_ready_only_after_loading(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.get_json()["state"] == "idle"
    chat(client, message="hello")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["family"] == "chat-template"


def test_preload_loads_the_model_before_any_request(make_app, chat_model, caplog):
    caplog.set_level(logging.INFO, logger="palaver")
    client = make_app(chat_model, preload=True).test_client()
    # Only probes, which never start a load (wait_ready would): the model loads because the app started.
    ready = wait_until(lambda: client.get("/readyz").status_code == 200, 60, "the preloaded model ready")
    described = client.get("/readyz").get_json()
    assert ready and described["family"] == "chat-template" and described["models"][0]["limits"]["context_tokens"]
    assert "loaded chat-llama" in caplog.text and described["requests"] == {}, "loaded before any request"


def test_api_answers_503_with_retry_after_while_the_model_loads(make_app, chat_model):
    gate = threading.Event()
    app = make_app(chat_model, loader=lambda settings: gate.wait(30) and load_model(settings), load_wait=0.1)
    engine = app.extensions["palaver"].backend
    response = app.test_client().post("/api/chat", json={"message": "hello"})
    assert_error(response, 503, None, "loading")
    assert int(response.headers["Retry-After"]) > 0
    gate.set()
    assert engine.wait_ready(30)
    assert app.test_client().post("/api/chat", json={"message": "hello"}).status_code == 200


def test_a_model_that_cannot_load_gives_503_and_keeps_its_path_in_the_log(make_app, tmp_path, caplog):
    client = make_app(tmp_path / "missing").test_client()
    refused = chat(client, message="hello")
    assert_error(refused, 503, None, "failed to load")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["state"] == "failed"
    for response in (refused, ready):
        assert str(tmp_path) not in response.get_data(as_text=True), "no file path reaches a client"
    assert str(tmp_path / "missing") in caplog.text, "the operator learns why from the log"


def test_a_reply_can_be_held_to_a_json_schema_and_a_bad_schema_is_named(client):
    schema = {
        "type": "object",
        "properties": {"n": {"enum": [1, 2, 3]}},
        "required": ["n"],
        "additionalProperties": False,
    }
    body = {
        "message": "pick one",
        "max_new_tokens": 32,
        "response_format": {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
    }
    reply = client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["finish_reason"] == "stop" and json.loads(reply.get_json()["reply"])["n"] in (1, 2, 3)
    body["response_format"]["json_schema"]["schema"] = {"type": "array", "uniqueItems": True}
    refused = client.post("/api/chat", json=body)
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "response_format.json_schema.schema"
    assert "'uniqueItems' at #" in refused.get_json()["error"]["message"]


def test_a_chat_schema_is_built_once_where_it_comes_in_and_compiled_once(client, monkeypatch):
    work = count_grammar_work(monkeypatch)
    schema = {"type": "object", "properties": {"once": {"type": "boolean"}}, "required": ["once"]}
    body = {"message": "hi", "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    assert client.post("/api/chat", json=body).status_code == 200
    assert len(work.built) == 1 and len(work.compiled) == 1


@pytest.mark.parametrize("form", [False, True], ids=["api", "form"])
def test_a_turn_resolves_its_model_name_once(make_app, chat_model, monkeypatch, form):
    app = make_app(chat_model)
    router, names = app.extensions["palaver"].backend, []
    real_resolve = router.resolve
    monkeypatch.setattr(router, "resolve", lambda name: names.append(name) or real_resolve(name))
    client = app.test_client()

    def send(**fields):
        if form:  # the page's form, asked for JSON: its session holds the conversation
            return client.post("/", data={"textbox": "hello", **fields}, headers={"Accept": "application/json"})
        return client.post("/api/chat", json={"message": "hello", **fields})

    first = send(model=str(chat_model))  # the model's source as written, resolved to its configured name
    assert first.status_code == 200 and first.get_json()["model"] == "chat-llama"
    assert names == [str(chat_model)]
    names.clear()
    conversation_id = first.get_json()["conversation_id"]
    assert send(**({} if form else {"conversation_id": conversation_id})).status_code == 200
    assert names == ["chat-llama"], "a conversation's stored model is checked once, and nothing else resolves"


def test_with_accounts_metrics_are_for_admins_and_operator_keys_alone(make_app, gguf_chat_model):
    from signing_in import CHEAP_HASHER, sign_up

    app = make_app(gguf_chat_model, auth="accounts", metrics="1", api_keys="operator-key")
    people = app.extensions["palaver"].people
    people.hasher = CHEAP_HASHER
    admin, member = app.test_client(), app.test_client()
    sign_up(admin, "ada")
    sign_up(member, "grace")
    people.set_state(people.by_login("grace").id, "active")
    assert admin.get("/metrics").status_code == 200
    assert member.get("/metrics").status_code == 403, "a person sees their own usage, not everyone's"
    assert app.test_client().get("/metrics", headers={"Authorization": "Bearer operator-key"}).status_code == 200
