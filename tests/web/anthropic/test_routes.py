"""Anthropic's Messages API, driven by the official anthropic client against a real gunicorn server."""

import json
import threading

import anthropic
import jsonschema
import pytest
import requests
from servers import start_server

from palaver.engine.torch.loading import load_model

MODEL = "long-chat-llama"
KEY = "key-one"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
CLOCK = {"name": "get_time", "description": "The time now", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def server(long_chat_model, tmp_path_factory):
    """A keyed server on the tiny chat Llama with room for the tools' listing (its tokenizer writes long prompts)."""
    with start_server(long_chat_model, tmp_path_factory.mktemp("anthropic"), api_keys=KEY, max_new_tokens="8") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0)


def test_a_message_follows_anthropics_objects(client):
    message = client.messages.create(model=MODEL, messages=HELLO, max_tokens=6, system="Be brief.")
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason in ("end_turn", "max_tokens")
    assert message.content and all(block.type == "text" and block.text for block in message.content)
    assert 1 <= message.usage.output_tokens <= 6 and message.usage.input_tokens > 0


def test_max_tokens_ends_the_reply_with_max_tokens(client):
    message = client.messages.create(model=MODEL, messages=HELLO, max_tokens=2)
    tokens, reason = message.usage.output_tokens, message.stop_reason
    assert tokens == 2 and reason == "max_tokens" or tokens < 2 and reason == "end_turn", (tokens, reason)


def test_a_stop_sequence_ends_the_reply_and_is_named(client):
    whole = client.messages.create(model=MODEL, messages=HELLO, max_tokens=8)
    text = whole.content[0].text
    # Two letters from after its start: the reply stops where they first occur, and keeps what came before.
    stop = next(text[at : at + 2] for at in range(1, len(text) - 1) if text[at : at + 2].isalpha())
    stopped = client.messages.create(model=MODEL, messages=HELLO, max_tokens=8, stop_sequences=[stop])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop
    assert stop not in "".join(block.text for block in stopped.content) and text.startswith(stopped.content[0].text)


def test_a_stream_sends_anthropics_events_in_order_and_the_whole_reply(client):
    whole = client.messages.create(model=MODEL, messages=HELLO, max_tokens=8)
    events = list(client.messages.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == ["content_block_start", *["content_block_delta"] * (len(kinds) - 5), "content_block_stop"]
    assert events[0].message.usage.input_tokens == whole.usage.input_tokens and events[0].message.id.startswith("msg_")
    text = "".join(event.delta.text for event in events if event.type == "content_block_delta")
    assert text == whole.content[0].text
    assert (
        events[-2].delta.stop_reason == whole.stop_reason
        and events[-2].usage.output_tokens == whole.usage.output_tokens
    )


def test_the_clients_stream_helper_gives_the_text_and_the_final_message(client):
    whole = client.messages.create(model=MODEL, messages=HELLO, max_tokens=8)
    with client.messages.stream(model=MODEL, messages=HELLO, max_tokens=8) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text and final.content == whole.content
    assert final.stop_reason == whole.stop_reason and final.usage == whole.usage


def test_count_tokens_is_the_input_tokens_of_the_same_request(client):
    args = {"model": MODEL, "messages": HELLO, "system": "Be brief.", "tools": [WEATHER, CLOCK]}
    counted = client.messages.count_tokens(**args).input_tokens
    assert counted == client.messages.create(**args, max_tokens=1).usage.input_tokens
    assert client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens < counted, "the tools are read"


def test_a_forced_tool_use_validates_and_its_result_gets_a_reply(client):
    tools, messages = [WEATHER, CLOCK], [{"role": "user", "content": "weather in Oslo?"}]
    forced = {"type": "tool", "name": "get_weather"}
    message = client.messages.create(model=MODEL, messages=messages, tools=tools, tool_choice=forced, max_tokens=128)
    [use] = message.content
    assert message.stop_reason == "tool_use" and use.type == "tool_use" and use.name == "get_weather"
    assert use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER["input_schema"])
    with client.messages.stream(model=MODEL, messages=messages, tools=tools, tool_choice=forced, max_tokens=128) as s:
        streamed = s.get_final_message()
    assert [(block.name, block.input) for block in streamed.content] == [(use.name, use.input)]

    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "3 degrees, snow"}]},
    ]
    answer = client.messages.create(model=MODEL, messages=messages, tools=tools, max_tokens=4)
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content
    counted = client.messages.count_tokens(model=MODEL, messages=messages, tools=tools).input_tokens
    assert answer.usage.input_tokens == counted, "the call and its result are what the model read"


def test_any_tool_use_calls_a_tool_and_none_never_does(client):
    tools, messages = [WEATHER, CLOCK], [{"role": "user", "content": "what now?"}]
    one = {"type": "any", "disable_parallel_tool_use": True}
    called = client.messages.create(model=MODEL, messages=messages, tools=tools, tool_choice=one, max_tokens=128)
    assert called.stop_reason == "tool_use" and [block.type for block in called.content] == ["tool_use"]
    plain = client.messages.create(
        model=MODEL, messages=messages, tools=tools, tool_choice={"type": "none"}, max_tokens=4
    )
    assert all(block.type == "text" for block in plain.content) and plain.stop_reason != "tool_use"


@pytest.mark.parametrize(
    "args, words",
    [
        ({"extra_body": {"max_tokens": None}}, "'max_tokens' is required"),  # the client itself needs one
        ({"messages": [{"role": "robot", "content": "hi"}]}, "'messages[0].role' must be one of user, assistant"),
        ({"extra_body": {"max_tokens": 10**9}}, "'max_tokens' must be an integer at least 1 and at most 1024"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "image blocks"),
        ({"thinking": {"type": "enabled"}}, "'thinking' takes a 'budget_tokens' with type enabled"),
    ],
)
def test_bad_requests_are_invalid_request_errors_naming_the_field(client, args, words):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**{"model": MODEL, "messages": HELLO, "max_tokens": 4, **args})
    assert caught.value.status_code == 400 and caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error" and words in caught.value.message


def test_nan_is_refused_naming_the_field(server):
    # The client cannot send NaN (its JSON encoder refuses it); other clients can.
    body = '{"model": "%s", "max_tokens": 4, "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}'
    headers = {"x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    response = requests.post(f"{server}/v1/messages", data=body % MODEL, headers=headers, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert "'temperature' must be a finite number" in response.json()["error"]["message"]


def test_an_unknown_model_is_a_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-sonnet-4-5", messages=HELLO, max_tokens=4)
    assert caught.value.body["error"]["type"] == "not_found_error" and MODEL in caught.value.message


def test_a_wrong_key_in_x_api_key_is_an_authentication_error(server):
    wrong = anthropic.Anthropic(base_url=server, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert caught.value.status_code == 401 and caught.value.body["error"]["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=server, auth_token=KEY, max_retries=0)
    assert bearer.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens > 0


def test_errors_keep_anthropics_shape_and_their_status(make_app, chat_model):
    client = make_app(chat_model, max_body_bytes=2048).test_client()
    body = {"model": "chat-llama", "messages": HELLO, "max_tokens": 4}
    cases = [
        (client.post("/v1/messages", data="nope", content_type="application/json"), 400, "invalid_request_error"),
        (client.post("/v1/messages", json={**body, "system": "x" * 4096}), 413, "request_too_large"),
        (client.post("/v1/messages", data=json.dumps(body), content_type="text/plain"), 415, "invalid_request_error"),
        (client.get("/v1/messages"), 405, "invalid_request_error"),
        (client.post("/v1/messages/batches", json=body), 404, "not_found_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status and response.get_json()["type"] == "error"
        assert response.get_json()["error"]["type"] == kind and response.get_json()["error"]["message"]


def test_a_loading_model_is_overloaded_with_retry_after(make_app, chat_model):
    gate = threading.Event()
    app = make_app(chat_model, loader=lambda settings: gate.wait(30) and load_model(settings), load_wait=0.1)
    response = app.test_client().post("/v1/messages", json={"model": "chat-llama", "messages": HELLO, "max_tokens": 4})
    gate.set()
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["type"] == "overloaded_error"


def test_messages_are_counted_in_the_metrics_under_their_own_surface(make_app, chat_model):
    client = make_app(chat_model, metrics=True).test_client()
    body = {"model": "chat-llama", "messages": HELLO, "max_tokens": 2}
    assert client.post("/v1/messages", json=body).status_code == 200
    assert client.post("/v1/messages", json={**body, "max_tokens": 0}).status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert 'palaver_requests_total{status="200",surface="anthropic"} 1.0' in text
    assert 'palaver_requests_total{status="400",surface="anthropic"} 1.0' in text


def test_rate_limits_count_messages_as_chat_completions(make_app, chat_model):
    client = make_app(chat_model, rate_limit="2/minute").test_client()
    body = {"model": "chat-llama", "messages": HELLO, "max_tokens": 2}
    statuses = [client.post("/v1/messages", json=body).status_code for _ in range(3)]
    refused = client.post("/v1/messages/count_tokens", json={"model": "chat-llama", "messages": HELLO})
    assert statuses == [200, 200, 429] and refused.get_json()["error"]["type"] == "rate_limit_error"


def test_a_thinking_models_reasoning_comes_in_thinking_blocks_when_asked(make_app, thinking_gguf_model):
    import httpx

    transport = httpx.WSGITransport(app=make_app(thinking_gguf_model))
    client = anthropic.Anthropic(
        base_url="http://localhost", api_key=KEY, max_retries=0, http_client=httpx.Client(transport=transport)
    )
    args = {"model": "thinking-llama", "messages": HELLO, "max_tokens": 8}
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(**args, thinking=thinking)
    [thought, text] = message.content
    assert (thought.type, thought.thinking, text.type, text.text) == ("thinking", "some thought", "text", "the answer")
    assert thought.signature and message.usage.output_tokens == 6, "thinking counts in output_tokens"
    with client.messages.stream(**args, thinking=thinking) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    assert [block.model_dump() for block in streamed.content] == [block.model_dump() for block in message.content]
    starts = [event.content_block.type for event in events if event.type == "content_block_start"]
    kinds = [event.delta.type for event in events if event.type == "content_block_delta"]
    assert starts == ["thinking", "text"] and kinds == ["thinking_delta", "signature_delta", "text_delta"]
    for off in ({}, {"thinking": {"type": "disabled"}}):  # as Anthropic's models, only when asked
        plain = client.messages.create(**args, **off)
        assert [(block.type, block.text) for block in plain.content] == [("text", "the answer")], off
    earlier = [*HELLO, {"role": "assistant", "content": message.model_dump()["content"]}, *HELLO]
    again = client.messages.create(**{**args, "messages": earlier}, thinking=thinking)
    assert [block.type for block in again.content] == ["thinking", "text"], "an earlier reply's thinking is accepted"
