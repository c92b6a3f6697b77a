"""OpenAI protocol details: the request and response models, and errors before and after a stream starts."""

import json
import threading
from dataclasses import replace

import pytest
from helpers import raising

from commons import Settings
from palaver.engine.loading import load_model
from palaver.errors import InvalidRequest
from palaver.web.openai.protocol import ChatCompletionRequest
from palaver.web.openai.responses import ChatCompletionChunk, ChunkChoice, Delta

BODY = {"model": "chat-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def events(response) -> list:
    raw = response.get_data(as_text=True)
    return [line[len("data: ") :] for line in raw.split("\n\n") if line]


def test_an_error_after_the_stream_starts_is_an_error_event_then_done(make_app, html_model, caplog):
    app = make_app(html_model)
    client = app.test_client()
    body = {**BODY, "model": "html-replier"}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    model = app.extensions["palaver"]["engine"].model.family.model
    real_forward = model.forward
    calls = []

    def prefill_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the prefill gives the first text; the next step fails
            raise RuntimeError("exploded inside the model")
        return real_forward(*args, **kwargs)

    model.forward = prefill_then_fail
    response = client.post("/v1/chat/completions", json={**body, "stream": True})
    data = events(response)
    del model.forward
    assert response.status_code == 200 and data[-1] == "[DONE]"
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "<script>"
    error = json.loads(data[-2])["error"]
    assert error["type"] == "server_error" and "exploded" not in response.get_data(as_text=True)
    assert "exploded inside the model" in caplog.text


def test_errors_before_the_stream_starts_keep_their_status(make_app, chat_model):
    client = make_app(chat_model, max_context_tokens=64).test_client()
    response = client.post(
        "/v1/chat/completions",
        json={**BODY, "stream": True, "messages": [{"role": "user", "content": "hello there " * 60}]},
    )
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "context_length_exceeded"
    text = client.post("/v1/completions", json={"model": "chat-llama", "prompt": "hello there " * 60})
    assert text.status_code == 400 and text.get_json()["error"]["param"] == "prompt"


def test_v1_answers_503_with_retry_after_while_loading(make_app, chat_model):
    app = make_app(chat_model, load_wait=0.1)
    gate = threading.Event()
    app.extensions["palaver"]["engine"]._loader = lambda settings: gate.wait(30) and load_model(settings)
    response = app.test_client().post("/v1/chat/completions", json=BODY)
    gate.set()
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["type"] == "model_not_ready"


def test_v1_errors_use_one_envelope(make_app, chat_model):
    client = make_app(chat_model).test_client()
    not_json = client.post("/v1/chat/completions", data="nope", content_type="application/json")
    for response in (
        not_json,
        client.get("/v1/nothing"),
        client.get("/v1/chat/completions"),
        client.post("/v1/chat/completions", data="nope"),
    ):
        assert set(response.get_json()["error"]) == {"message", "type", "param", "code"}
    assert not_json.status_code == 400


def test_a_failing_model_mid_generation_is_500_without_details(make_app, chat_model):
    app = make_app(chat_model)
    client = app.test_client()
    client.post("/v1/chat/completions", json=BODY)
    app.extensions["palaver"]["engine"].model.family.model.forward = raising(RuntimeError("internal detail"))
    response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 500 and "internal detail" not in response.get_data(as_text=True)


def parse_chat(**fields):
    return ChatCompletionRequest.parse({**BODY, **fields}, {"settings": Settings()})


@pytest.mark.parametrize(
    "fields, param, code, words",
    [
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls", None, "unknown"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", None, "'messages[0].role' is required"),
        ({"messages": "hello"}, "messages", None, "a list of 1 to 256 messages"),
        ({"n": 3}, "n", "unsupported_parameter", "only n=1 is supported"),
        ({"max_tokens": 4, "max_completion_tokens": 4}, "max_tokens", None, "not both"),
        ({"stream_options": {"include_usage": True}}, "stream_options", None, "only with stream: true"),
        ({"max_tokens": "4"}, "max_tokens", None, "an integer at least 1 and at most 1024"),
    ],
)
def test_chat_requests_name_the_field_and_code(fields, param, code, words):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(**fields)
    assert (caught.value.param, caught.value.code) == (param, code) and words in caught.value.message


def test_chat_requests_map_openai_names_to_the_engines_parameters():
    defaults = Settings(temperature=0.7, do_sample=False).generation_defaults()
    params = parse_chat(
        max_tokens=None, max_completion_tokens=9, temperature=0.5, stop="###", n=1, logprobs=None
    ).generation_params(defaults)
    assert (params.max_new_tokens, params.temperature, params.do_sample, params.stop) == (9, 0.5, True, ("###",))
    assert parse_chat(temperature=0).generation_params(defaults).greedy
    assert parse_chat().generation_params(defaults) == replace(defaults, max_new_tokens=4)


def test_chunks_carry_usage_only_when_asked():
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(delta=Delta(content="hi"))])
    assert "usage" not in chunk.as_event(include_usage=False)
    assert chunk.as_event(include_usage=True)["usage"] is None
    assert chunk.as_event(False)["choices"][0] == {
        "index": 0,
        "delta": {"role": None, "content": "hi"},
        "logprobs": None,
        "finish_reason": None,
    }
