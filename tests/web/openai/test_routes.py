"""The OpenAI-compatible API, driven by the official openai client against a real gunicorn server."""

import http.client
import json
import math
import re
import threading
from urllib.parse import urlparse

import openai
import pytest
import requests
from helpers import count_grammar_work, raising

from palaver.engine.torch.loading import load_model

MODEL = "chat-llama"
HELLO = [{"role": "user", "content": "hello there"}]
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def sse_data(response) -> list:
    """Return the data of each Server-Sent Event in a Flask test response."""
    raw = response.get_data(as_text=True)
    return [line[len("data: ") :] for line in raw.split("\n\n") if line]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model_with_its_limits(client):
    [model] = client.models.list().data
    assert model.id == MODEL and model.owned_by == "palaver"
    assert model.family == "chat-template" and model.context_length == 512 and model.max_input_tokens == 511


def test_chat_completion_follows_openai_objects(client):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL and isinstance(completion.created, int)
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert 1 <= usage.completion_tokens <= 5 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra["truncated_turns"] == 0


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_token_limits_are_respected(client, limit):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, **{limit: 2})
    tokens, reason = completion.usage.completion_tokens, completion.choices[0].finish_reason
    assert tokens == 2 and reason == "length" or 1 <= tokens < 2 and reason == "stop", (tokens, reason)


def test_streaming_sends_role_content_finish_usage_and_matches_the_whole_reply(client):
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_stop_sequences_end_the_reply_and_are_left_out(html_server):
    client = openai.OpenAI(base_url=html_server + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    plain = client.chat.completions.create(model=model, messages=HELLO, max_tokens=10)
    assert "alert(1)" in plain.choices[0].message.content
    stopped = client.chat.completions.create(model=model, messages=HELLO, max_tokens=10, stop=["alert", "zzz"])
    assert stopped.choices[0].message.content.strip() == "<script>" and stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=model, messages=HELLO, max_tokens=10, stop="alert", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed).strip() == "<script>"


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"n": 9}, "'n' must be an integer at least 1 and at most 8"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]}, "'not' at #"),
        ({"top_logprobs": 3}, "'top_logprobs' needs 'logprobs': true"),
        ({"logprobs": True, "top_logprobs": 21}, "'top_logprobs' must be an integer at least 0 and at most 20"),
        ({"tool_choice": "required"}, "'tool_choice' 'required' needs at least one function in 'tools'"),
        ({"functions": [{"name": "f"}]}, "functions are deprecated"),
        ({"presence_penalty": 0.5}, "presence_penalty is not supported"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}}, "'not'"),
        ({"temperature": 3}, "'temperature' must be a finite number at least 0.0 and at most 2.0"),
        ({"max_tokens": 0}, "'max_tokens' must be an integer at least 1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "'stop' must be a string or a list of at most 4"),
    ],
)
def test_requests_we_cannot_honour_get_a_clear_400(client, extra, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, **extra)
    assert caught.value.status_code == 400 and words in caught.value.message


@pytest.mark.parametrize(
    "messages, param",
    [
        ([], "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": "x"}, {"role": "assistant"}], "messages[1].content"),
        ([{"role": "system", "content": "only a system message"}], "messages"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content"),
    ],
)
def test_bad_messages_name_the_field(client, messages, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert caught.value.body["param"] == param


def test_text_parts_and_developer_messages_are_accepted(client):
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
    ]
    assert client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2).choices


def test_an_unknown_model_is_404_and_names_the_served_one(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert MODEL in caught.value.message and caught.value.body["code"] == "model_not_found"


def test_overflowing_history_drops_oldest_turns_and_says_how_many(client):
    history = []
    for n in range(40):
        history += [
            {"role": "user", "content": f"tell me a story about a cat number {n}"},
            {"role": "assistant", "content": "the quick brown fox jumps over the lazy dog " * 2},
        ]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": "you are palaver"}, *history, *HELLO], max_tokens=2
    )
    dropped = int(raw.headers["X-Palaver-Truncated-Turns"])
    assert dropped > 0 and raw.parse().usage.model_extra["truncated_turns"] == dropped


def test_presets_are_accepted_by_name(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, extra_body={"preset": "text-message-check"}
    )
    assert completion.choices
    with pytest.raises(openai.BadRequestError, match="text-message-check"):
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body={"preset": "nope"})


def test_completions_take_a_prompt_or_a_batch(client):
    single = client.completions.create(model=MODEL, prompt="hello there", max_tokens=3)
    assert single.object == "text_completion" and len(single.choices) == 1
    batch = client.completions.create(model=MODEL, prompt=["hello", "what is your name"], max_tokens=3, echo=True)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[1].text.startswith("what is your name")
    assert batch.usage.completion_tokens <= 6
    streamed = list(client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2, stream=True))
    assert {c.choices[0].index for c in streamed} == {0, 1}


def test_api_keys_are_required_when_set(keyed_server):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=keyed_server + "/v1", api_key="wrong", max_retries=0).models.list()
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    keyed = openai.OpenAI(base_url=keyed_server + "/v1", api_key="key-two", max_retries=0)
    assert keyed.chat.completions.create(model=MODEL, messages=HELLO).choices
    assert requests.post(keyed_server + "/api/chat", json={"message": "hi"}, timeout=10).status_code == 401
    assert (
        requests.post(
            keyed_server + "/api/chat", json={"message": "hi"}, timeout=10, headers={"Authorization": "Bearer key-one"}
        ).status_code
        == 200
    )
    assert requests.get(keyed_server + "/healthz", timeout=10).status_code == 200
    assert requests.get(keyed_server + "/", timeout=10).status_code == 401, "the page asks for a key"
    for accept in ("text/html", "application/json", "text/event-stream"):  # the form endpoint generates too
        assert (
            requests.post(
                keyed_server + "/", data={"textbox": "hi"}, headers={"Accept": accept}, timeout=10
            ).status_code
            == 401
        )
    assert (
        requests.post(
            keyed_server + "/",
            data={"textbox": "hi"},
            timeout=10,
            headers={"Accept": "application/json", "Authorization": "Bearer key-one"},
        ).status_code
        == 200
    )
    assert requests.get(keyed_server + "/metrics", timeout=10).status_code == 404, "metrics are off by default"


def test_an_oversized_body_gets_413_in_the_envelope(server):
    response = requests.post(
        server + "/v1/chat/completions",
        timeout=10,
        json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 70000}]},
    )
    assert response.status_code == 413 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_sse_framing_byte_by_byte(server):
    url = urlparse(server)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = json.dumps(
        {"model": MODEL, "messages": HELLO, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    )
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    raw = response.read().decode()
    assert re.fullmatch(r"(data: [^\n]+\n\n)+data: \[DONE\]\n\n", raw), raw
    events = [json.loads(line[len("data: ") :]) for line in raw.split("\n\n")[:-2]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 1
    assert all(e["usage"] is None for e in events[:-1])


def test_an_error_after_the_stream_starts_is_an_error_event_then_done(make_app, html_model, caplog):
    app = make_app(html_model)
    client = app.test_client()
    body = {**BODY, "model": "html-replier"}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    model = app.extensions["palaver"].backend.loaded().model.family.model.module
    real_forward = model.forward
    calls = []

    def prefill_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the prefill gives the first text; the next step fails
            raise RuntimeError("exploded inside the model")
        return real_forward(*args, **kwargs)

    model.forward = prefill_then_fail
    response = client.post("/v1/chat/completions", json={**body, "stream": True})
    data = sse_data(response)
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
    gate = threading.Event()
    app = make_app(chat_model, loader=lambda settings: gate.wait(30) and load_model(settings), load_wait=0.1)
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


ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize(
    "fields, built",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}}}, 1),
        ({"response_format": {"type": "json_object"}}, 1),
        ({"tools": [WEATHER], "tool_choice": "required"}, 2),  # the function's schema, checked, then the calls'
        (
            {
                "tools": [CLOCK],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}},
            },
            2,  # the answer's schema, checked, then the grammar of calls or the answer (get_time takes nothing)
        ),
    ],
    ids=["schema", "json-object", "tools", "tools-and-schema"],
)
def test_a_request_builds_each_grammar_once_and_the_engine_compiles_its_own_once(
    make_app, chat_model, monkeypatch, fields, built
):
    client = make_app(chat_model).test_client()
    assert client.post("/v1/chat/completions", json=BODY).status_code == 200  # loaded, with nothing to compile
    work = count_grammar_work(monkeypatch)
    response = client.post("/v1/chat/completions", json={**BODY, **fields})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(work.built) == built and len(set(work.built)) == built, "no grammar is built twice"
    assert len(work.compiled) == 1, "the grammar the request carries, compiled for the model's tokenizer once"


def test_n_choices_share_one_grammar_compiled_once(make_app, chat_model, monkeypatch):
    client = make_app(chat_model).test_client()
    work = count_grammar_work(monkeypatch)
    body = {**BODY, "n": 3, "response_format": {"type": "json_object"}}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert len(work.built) == 1 and len(work.compiled) == 1


def test_a_failing_model_mid_generation_is_500_without_details(make_app, chat_model):
    app = make_app(chat_model)
    client = app.test_client()
    client.post("/v1/chat/completions", json=BODY)
    model = app.extensions["palaver"].backend.loaded().model.family.model.module
    model.forward = raising(RuntimeError("internal detail"))
    response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 500 and "internal detail" not in response.get_data(as_text=True)


CONSTRAINED_SCHEMAS = [
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False},
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999}},
                "required": ["id"],
                "additionalProperties": False,
            }
        },
        "required": ["user"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 4},
    {"enum": ["yes", "no", "maybe"]},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 5}, {"const": "none"}]},
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
    {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.5},
    {"type": "string", "enum": ["a", "b"]},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2}},
        "required": ["tags"],
        "additionalProperties": False,
    },
    {},  # any JSON value: it may run to max_tokens in a long string, but whatever stops parses
]


@pytest.mark.parametrize("stream", [False, True])
def test_every_reply_that_stops_follows_its_json_schema(server, client, stream):
    import jsonschema

    for index, schema in enumerate(CONSTRAINED_SCHEMAS):
        for seed in (1, 2):
            response_format = {"type": "json_schema", "json_schema": {"name": f"s{index}", "schema": schema}}
            args = dict(model=MODEL, messages=HELLO, max_tokens=64, temperature=0.7, seed=seed)
            if stream:
                chunks = list(client.chat.completions.create(**args, response_format=response_format, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                finish = next(c.choices[0].finish_reason for c in reversed(chunks) if c.choices)
            else:
                choice = client.chat.completions.create(**args, response_format=response_format).choices[0]
                text, finish = choice.message.content, choice.finish_reason
            if schema or finish == "stop":  # every bounded schema ends, and every ending is valid
                assert finish == "stop", (schema, text)
                jsonschema.validate(json.loads(text), schema)


def test_the_openai_clients_parse_gets_its_pydantic_model_back(client):
    from pydantic import BaseModel

    class Verdict(BaseModel):
        ok: bool

    completion = client.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Verdict, max_tokens=16)
    assert isinstance(completion.choices[0].message.parsed, Verdict)
    any_object = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=64, response_format={"type": "json_object"}, temperature=0
    ).choices[0]
    if any_object.finish_reason == "stop":
        assert isinstance(json.loads(any_object.message.content), dict)


@pytest.fixture(scope="module")
def native_server(gguf_chat_model, tmp_path_factory):
    """A server on the tiny Llama GGUF file, which the native step runs; no per-client bound, for 32 at once; no
    stored turns, whose writer's pace would change what the prefill counts."""
    from servers import start_server

    cache = tmp_path_factory.mktemp("native-server")
    with start_server(
        gguf_chat_model, cache, max_new_tokens="24", client_share="0", stored_turns_bytes="0"
    ) as base_url:
        yield base_url


def test_a_seeded_reply_is_the_same_bytes_alone_and_under_32_concurrent_requests(native_server):
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=native_server + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id

    def ask(seed: int, words: str = "tell me something"):
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": words}], max_tokens=24, temperature=0.8, seed=seed
        )
        return completion.choices[0].message.content, completion.system_fingerprint

    alone, stamp = ask(7)
    assert stamp and stamp.startswith("fp_") and len(stamp) == 19
    with ThreadPoolExecutor(32) as pool:
        # Half the neighbours ask the same, half something else with other seeds, all in the same batches.
        futures = [pool.submit(ask, 7) if i % 2 else pool.submit(ask, 100 + i, "x " * (i + 1)) for i in range(32)]
        results = [future.result() for future in futures]
    assert {text for i, (text, _) in enumerate(results) if i % 2} == {alone}
    assert {fingerprint for _, fingerprint in results} == {stamp}
    assert len({text for i, (text, _) in enumerate(results) if not i % 2}) > 1, "other seeds sample otherwise"


def test_n_choices_share_the_prompts_prefill_and_greedy_ones_are_equal(native_server):
    from servers import engine_counts

    client = openai.OpenAI(base_url=native_server + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "four choices, please, of the same thing " * 3}]
    before = engine_counts(native_server)
    completion = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, n=4)
    after = engine_counts(native_server)
    texts = [choice.message.content for choice in completion.choices]
    assert [choice.index for choice in completion.choices] == [0, 1, 2, 3] and len(set(texts)) == 1
    single = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0).usage
    assert completion.usage.prompt_tokens == single.prompt_tokens, "the prompt counts once"
    assert completion.usage.completion_tokens == 4 * single.completion_tokens
    # The prompt was computed once; the other three choices copied all of it but the last token.
    assert after["prefilled_tokens"] - before.get("prefilled_tokens", 0) == single.prompt_tokens + 3

    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=8, temperature=0.9, seed=5, n=3, stream=True
        )
    )
    streamed = {}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(streamed) == [0, 1, 2] and len(set(streamed.values())) > 1, "seeds 5, 6 and 7 sample apart"
    refused = requests.post(f"{native_server}/v1/completions", json={"model": model, "prompt": "a", "n": 2})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time", "description": "The time now"}}
TOOL_SCHEMAS = {
    "get_weather": WEATHER_TOOL["function"]["parameters"],
    "get_time": {"type": "object", "properties": {}, "additionalProperties": False},
}


@pytest.fixture(scope="module")
def tool_server(long_gguf_chat_model, tmp_path_factory):
    """A native server on the tiny chat Llama with room for the tools' listing (its tokenizer writes long prompts)."""
    from servers import start_server

    with start_server(long_gguf_chat_model, tmp_path_factory.mktemp("tool-server"), max_new_tokens="96") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def tool_client(tool_server):
    return openai.OpenAI(base_url=tool_server + "/v1", api_key="unused", max_retries=0)


def tool_reply(client, stream, **args):
    """Ask with tools; return (content, [(id, name, arguments)], finish_reason), reassembling a stream as clients do."""
    model = "long-chat-llama"
    args = {"model": model, "messages": HELLO, "max_tokens": 96, "tools": [WEATHER_TOOL, CLOCK_TOOL], **args}
    if not stream:
        choice = client.chat.completions.create(**args).choices[0]
        calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        return choice.message.content, calls, choice.finish_reason
    content, parts, finish = None, {}, None
    for chunk in client.chat.completions.create(**args, stream=True):
        for choice in chunk.choices:
            if choice.delta.content:
                content = (content or "") + choice.delta.content
            for call in choice.delta.tool_calls or []:
                part = parts.setdefault(call.index, ["", "", ""])
                part[0] += call.id or ""
                part[1] += (call.function.name or "") if call.function else ""
                part[2] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    return content, [tuple(parts[index]) for index in sorted(parts)], finish


def assert_valid_calls(calls):
    import jsonschema

    assert calls and len({call_id for call_id, _, _ in calls}) == len(calls)
    for call_id, name, arguments in calls:
        assert call_id.startswith("call_")
        jsonschema.validate(json.loads(arguments), TOOL_SCHEMAS[name])


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choices_through_the_openai_client(tool_client, stream):
    client = tool_client
    for seed in (1, 2, 3):
        sampled = {"temperature": 0.7, "seed": seed}
        # required, one call at a time: bounded arguments, so every reply ends with its one call
        content, calls, finish = tool_reply(
            client, stream, tool_choice="required", parallel_tool_calls=False, **sampled
        )
        assert finish == "tool_calls" and len(calls) == 1 and not content
        assert_valid_calls(calls)
        # a named function: that one, whatever the model would rather do
        named = {"type": "function", "function": {"name": "get_time"}}
        content, calls, finish = tool_reply(client, stream, tool_choice=named, **sampled)
        assert finish == "tool_calls" and [(name, arguments) for _, name, arguments in calls] == [("get_time", "{}")]
        # required, calls in parallel: each call that ends is whole
        content, calls, finish = tool_reply(client, stream, tool_choice="required", **sampled)
        assert finish in ("tool_calls", "length")
        assert_valid_calls(calls if finish == "tool_calls" else calls[:-1] or calls)
        # none: never a call
        content, calls, finish = tool_reply(client, stream, tool_choice="none", **sampled)
        assert calls == [] and finish in ("stop", "length") and isinstance(content, str)
        # auto: an answer or calls, each well-formed
        content, calls, finish = tool_reply(client, stream, **sampled)
        if calls and finish == "tool_calls":
            assert_valid_calls(calls)
        elif not calls:
            assert "<tool_call>" not in (content or "")


def test_a_streamed_tool_reply_is_the_non_streamed_one(tool_client):
    client = tool_client
    sampled = {"temperature": 0.7, "seed": 11, "tool_choice": "required"}
    whole, streamed = tool_reply(client, False, **sampled), tool_reply(client, True, **sampled)
    assert [call[1:] for call in whole[1]] == [call[1:] for call in streamed[1]] and whole[2] == streamed[2]


def test_a_conversation_with_calls_and_results_continues(tool_server, tool_client):
    server, client = tool_server, tool_client
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "3 degrees, snow"},
    ]
    tools = [WEATHER_TOOL, CLOCK_TOOL]
    model = "long-chat-llama"
    completion = client.chat.completions.create(model=model, messages=messages, tools=tools, max_tokens=4)
    counted = requests.post(f"{server}/tokenize", json={"model": model, "messages": messages, "tools": tools}).json()
    assert completion.usage.prompt_tokens == counted["count"], "the tools and the results are what the model read"
    bare = requests.post(f"{server}/tokenize", json={"model": model, "messages": messages}).json()
    assert bare["count"] < counted["count"], "the tools are in the prompt"
    prompt = requests.post(f"{server}/detokenize", json={"tokens": counted["tokens"]}).json()["prompt"]
    assert "<tool_response>\n3 degrees, snow\n</tool_response>" in prompt and '"name": "get_weather"' in prompt


def test_logprobs_on_chat_streamed_and_not_and_on_completions(client):
    args = {"model": MODEL, "messages": HELLO, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    choice = client.chat.completions.create(**args).choices[0]
    entries = choice.logprobs.content
    assert 0 < len(entries) <= 6 and all(len(entry.top_logprobs) == 3 for entry in entries)
    for entry in entries:
        assert entry.logprob <= 0 and entry.top_logprobs[0].logprob >= entry.logprob
        assert entry.bytes == list(entry.bytes) and entry.token.encode("utf-8", "replace")
    streamed = [
        entry
        for chunk in client.chat.completions.create(**args, stream=True)
        for c in chunk.choices
        if c.logprobs
        for entry in c.logprobs.content or []
    ]
    # The same tokens; the numbers agree to float32's precision (a cached prefix is summed in another order).
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert all(math.isclose(a.logprob, b.logprob, rel_tol=1e-5) for a, b in zip(streamed, entries))
    plain = client.chat.completions.create(**{**args, "logprobs": False, "top_logprobs": None}).choices[0]
    assert plain.logprobs is None

    text = client.completions.create(model=MODEL, prompt="hello", max_tokens=5, temperature=0, logprobs=2).choices[0]
    logprobs = text.logprobs
    assert (
        len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == len(logprobs.text_offset)
    )
    assert logprobs.text_offset == sorted(logprobs.text_offset) and all(len(top) <= 2 for top in logprobs.top_logprobs)


def test_under_a_grammar_logprobs_are_those_of_the_allowed_tokens(client):
    answers = ['"yes"', '"no"', '"maybe"']
    response_format = {"type": "json_schema", "json_schema": {"name": "v", "schema": {"enum": ["yes", "no", "maybe"]}}}
    choice = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, logprobs=True, top_logprobs=20, response_format=response_format
    ).choices[0]
    first = choice.logprobs.content[0]
    assert all(any(a.startswith(bytes(t.bytes).decode()) for a in answers) for t in first.top_logprobs)
    assert math.isclose(sum(math.exp(t.logprob) for t in first.top_logprobs), 1.0, rel_tol=1e-6)


def test_a_thinking_models_reasoning_comes_apart_from_its_content_streamed_or_not(make_app, thinking_gguf_model):
    import httpx

    transport = httpx.WSGITransport(app=make_app(thinking_gguf_model))
    client = openai.OpenAI(
        base_url="http://localhost/v1", api_key="unused", max_retries=0, http_client=httpx.Client(transport=transport)
    )
    args = {"model": "thinking-llama", "messages": HELLO}
    completion = client.chat.completions.create(**args)
    message = completion.choices[0].message
    assert message.content == "the answer" and "<think>" not in message.content
    assert message.reasoning_content == message.reasoning == "some thought"  # llama-server's name, and vLLM's
    assert completion.usage.completion_tokens == 6 and completion.usage.completion_tokens_details.reasoning_tokens == 3
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas) == "some thought"
    assert "".join(delta.content or "" for delta in deltas) == "the answer"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 3
    for off in ({"reasoning_effort": "none"}, {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}):
        plain = client.chat.completions.create(**args, **off).choices[0].message
        assert plain.content == "the answer" and getattr(plain, "reasoning_content", None) is None, off
    replayed = [*HELLO, message.model_dump(exclude_none=True), {"role": "user", "content": "and then?"}]
    assert client.chat.completions.create(model="thinking-llama", messages=replayed).choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**args, extra_body={"chat_template_kwargs": {"tools_in_user_message": True}})
    assert caught.value.body["param"] == "chat_template_kwargs.tools_in_user_message"
