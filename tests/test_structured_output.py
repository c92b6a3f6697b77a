"""Structured output on a real server: a schema is refused at the boundary, served, or fails cleanly; never a lie."""

import json

import jsonschema
import pytest
import requests
from helpers import schema_outgrowing_the_parser_mid_reply
from servers import procfile_server, server_env

MODEL = "chat-llama"
FIELD = "response_format.json_schema.schema"
SELF_REFERENCE = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
NESTED_REPEATS = {"type": "string", "pattern": "^(x{1,100}){1,100}y$"}
WIDE = {"type": "object", "properties": {f"p{index}": {"type": "integer"} for index in range(600)}}
REASONING_FIRST = {
    "type": "object",
    "properties": {"reasoning": {"type": "string", "maxLength": 12}, "answer": {"type": "integer"}},
    "required": ["reasoning", "answer"],
}


@pytest.fixture(scope="module")
def server(gguf_chat_model, tmp_path_factory):
    env = server_env(gguf_chat_model, tmp_path_factory.mktemp("structured"), max_new_tokens="48")
    with procfile_server(env, wait_for="/readyz", timeout=120, wait_for_exit=False) as running:
        yield running


def ask(server, schema, stream=False, **fields) -> requests.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 48,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "stream": stream,
        **fields,
    }
    return requests.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def events(response: requests.Response) -> list:
    lines = [line[len("data: ") :] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


@pytest.mark.parametrize("schema", [SELF_REFERENCE, NESTED_REPEATS], ids=["self-reference", "nested-repeats"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_that_cannot_be_enforced_is_a_400_naming_the_field_never_a_stop(server, schema, stream):
    before = len(server.log())
    response = ask(server, schema, stream)
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert error["param"] == FIELD and error["type"] == "invalid_request_error", error
    assert "<state>" not in error["message"] and "Traceback" not in server.log()[before:]


def test_an_object_of_six_hundred_optional_properties_is_served_and_what_stops_validates(server):
    before = len(server.log())
    for seed in (1, 2):
        response = ask(server, WIDE, temperature=0.8, seed=seed)
        assert response.status_code == 200, response.text[:500]
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] in ("stop", "length")
        if choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["message"]["content"]), WIDE)
    assert "Traceback" not in server.log()[before:]


def test_a_grammar_that_breaks_mid_reply_is_a_clean_error_with_its_reason(server):
    before = len(server.log())
    response = ask(server, schema_outgrowing_the_parser_mid_reply())
    assert response.status_code == 400, response.text[:500]
    error = response.json()["error"]
    assert error["param"] == FIELD and error["code"] == "grammar_failed" and "items" in error["message"]
    streamed = ask(server, schema_outgrowing_the_parser_mid_reply(), stream=True)
    assert streamed.status_code == 200  # the headers went before the grammar broke
    sent = events(streamed)
    assert sent[-1]["error"]["code"] == "grammar_failed", sent[-1]
    assert not any(c.get("finish_reason") == "stop" for event in sent for c in event.get("choices", []))
    log = server.log()[before:]
    assert "Traceback" not in log and "<grammar>" not in log, log[-2000:]


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_writes_its_keys_in_the_schemas_order(server, stream):
    response = ask(server, REASONING_FIRST, stream)
    assert response.status_code == 200, response.text[:500]
    if stream:
        text = "".join(c["delta"].get("content") or "" for e in events(response) for c in e.get("choices", []))
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text.startswith('{"reasoning":"'), text
