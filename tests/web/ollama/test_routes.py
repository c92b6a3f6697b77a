"""Ollama's API under /ollama, driven by the official ollama clients (Python and JS) against one real server."""

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import ollama
import pytest
import requests
import tiny_models
from servers import start_server
from timing import budget

MODEL = "chat-llama"
TOOL_MODEL = "long-chat-llama"  # its 8,192 positions hold the tools' listing, which the tiny tokenizer writes long
THINKING_MODEL = "thinking-llama"  # answers '<think>\nsome thought\n</think>\n\nthe answer', or the answer alone
KEY = "key-one"
HELLO = [{"role": "user", "content": "hello there"}]
SAMPLED = {"temperature": 0.8, "seed": 7}
WEATHER = {
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
JS_CLIENT = Path(__file__).with_name("ollama_client.mjs")
NODE_MODULES = Path(__file__).resolve().parents[3] / "node_modules"


@pytest.fixture(scope="module")
def server(gguf_chat_model, long_chat_model, thinking_gguf_model, tmp_path_factory):
    """One keyed server on three native models: the tiny chat Llama, its long twin for the tools' listing, and the
    tiny thinking Llama."""
    cache = tmp_path_factory.mktemp("ollama")
    long_gguf = tiny_models.build_gguf_llama(long_chat_model, cache / f"{TOOL_MODEL}.gguf")
    models = f"{MODEL}={gguf_chat_model},{TOOL_MODEL}={long_gguf},{THINKING_MODEL}={thinking_gguf_model}"
    with start_server("", cache, models=models, api_keys=KEY, max_new_tokens="8") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=f"{server}/ollama", headers={"Authorization": f"Bearer {KEY}"})


def streamed_text(parts) -> tuple[str, object]:
    """Join a stream's text (a chat's or a generation's), checking that only its last part is done; return it too."""
    parts = list(parts)
    assert [part.done for part in parts] == [False] * (len(parts) - 1) + [True]
    text = "".join(part.message.content if isinstance(part, ollama.ChatResponse) else part.response for part in parts)
    return text, parts[-1]


def assert_counted(answer, most: int) -> None:
    """Check a last object's counts and durations: tokens read and written, nanoseconds spent."""
    assert answer.done and answer.done_reason in ("stop", "length")
    assert answer.prompt_eval_count > 0 and 1 <= answer.eval_count <= most
    durations = (answer.load_duration, answer.prompt_eval_duration, answer.eval_duration)
    assert all(isinstance(value, int) and value >= 0 for value in durations)
    assert answer.total_duration >= answer.prompt_eval_duration + answer.eval_duration > 0


def test_chat_and_generate_stream_what_they_answer_whole(client):
    for options in ({"temperature": 0}, SAMPLED):
        whole = client.chat(model=MODEL, messages=HELLO, options=options, stream=False)
        text, last = streamed_text(client.chat(model=MODEL, messages=HELLO, options=options, stream=True))
        assert text == whole.message.content and whole.message.role == "assistant" and whole.model == MODEL
        assert last.eval_count == whole.eval_count and last.prompt_eval_count == whole.prompt_eval_count
        assert_counted(whole, 8)
        assert_counted(last, 8)
        generated = client.generate(model=MODEL, prompt="hello there", options=options)
        text, last = streamed_text(client.generate(model=MODEL, prompt="hello there", options=options, stream=True))
        assert text == generated.response and last.eval_count == generated.eval_count
    assert whole.message.content, "a sampled reply has text"
    short = client.chat(model=MODEL, messages=HELLO, options={"num_predict": 2, "temperature": 0})
    assert short.done_reason == "length" and short.eval_count == 2


def test_a_stream_is_newline_delimited_json_by_default(server):
    body = {"model": MODEL, "prompt": "hello there", "options": {"num_predict": 3}}
    headers = {"Authorization": f"Bearer {KEY}"}
    response = requests.post(f"{server}/ollama/api/generate", json=body, headers=headers, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    parts = [json.loads(line) for line in response.text.splitlines()]
    assert parts[-1]["done"] is True and parts[-1]["done_reason"] == "length" and parts[-1]["eval_count"] == 3
    assert all(part["done"] is False and "done_reason" not in part for part in parts[:-1])
    # curl -d, as Ollama's docs post, sends a form's content type: taken, as Ollama takes it.
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    curled = requests.post(
        f"{server}/ollama/api/generate", data=json.dumps({**body, "stream": False}), headers=form, timeout=30
    )
    assert curled.status_code == 200 and curled.json()["done"] is True


def test_format_holds_the_reply_to_json_and_to_a_schema(client):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    answer = client.chat(model=MODEL, messages=HELLO, format=schema, options={"num_predict": 64, "temperature": 0})
    assert answer.done_reason == "stop"
    jsonschema.validate(json.loads(answer.message.content), schema)
    sampled = {"num_predict": 64, **SAMPLED}
    parts = client.generate(model=MODEL, prompt="hi", format=schema, stream=True, options=sampled)
    jsonschema.validate(json.loads(streamed_text(parts)[0]), schema)
    anything = client.generate(model=MODEL, prompt="hi", format="json", options={"num_predict": 64, "temperature": 0})
    if anything.done_reason == "stop":
        assert isinstance(json.loads(anything.response), dict)


def test_a_forced_tool_call_validates_and_its_result_gets_a_reply(server, client):
    body = {
        "model": TOOL_MODEL,
        "messages": [{"role": "user", "content": "weather in Oslo?"}],
        "tools": [WEATHER],
        # Palaver's extension, as on /v1: a tiny random model would never call a tool of its own accord.
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "options": {"num_predict": 128, "temperature": 0},
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    whole = requests.post(f"{server}/ollama/api/chat", json={**body, "stream": False}, headers=headers, timeout=60)
    answer = ollama.ChatResponse(**whole.json())
    [call] = answer.message.tool_calls
    assert answer.done_reason == "stop" and call.function.name == "get_weather"
    jsonschema.validate(call.function.arguments, WEATHER["function"]["parameters"])
    streamed = requests.post(f"{server}/ollama/api/chat", json=body, headers=headers, timeout=60)
    parts = [ollama.ChatResponse(**json.loads(line)) for line in streamed.text.splitlines()]
    assert [part.message.tool_calls for part in parts if part.message.tool_calls] == [answer.message.tool_calls]

    result = {"role": "tool", "content": "3 degrees, snow", "tool_name": "get_weather"}
    messages = [*body["messages"], answer.message, result]
    reply = client.chat(model=TOOL_MODEL, messages=messages, tools=[WEATHER], options={"num_predict": 4})
    assert reply.done and reply.prompt_eval_count > answer.prompt_eval_count, "the call and its result were read"

    def get_time(zone: str) -> str:
        """The time now in a zone.

        Args:
          zone: The zone, such as UTC
        """
        return "noon"

    # The client turns a Python function into a tool, in the shape Ollama's server takes.
    assert client.chat(model=TOOL_MODEL, messages=HELLO, tools=[get_time], options={"num_predict": 2}).done


def test_models_are_listed_shown_and_running(server, client):
    assert requests.get(f"{server}/ollama", timeout=10).text == "Ollama is running"  # probed with no key
    assert requests.head(f"{server}/ollama/", timeout=10).status_code == 200
    assert requests.get(f"{server}/ollama/api/version", timeout=10).json()["version"]
    client.chat(model=MODEL, messages=HELLO, options={"num_predict": 1})
    listed = {entry.model: entry for entry in client.list().models}
    assert list(listed) == [MODEL, TOOL_MODEL, THINKING_MODEL]
    details = listed[MODEL].details
    assert (details.format, details.family) == ("gguf", "llama") and details.parameter_size.endswith("K")
    assert details.quantization_level in ("Q4_0", "Q4_1", "Q8_0") and listed[MODEL].size > 0
    assert len(listed[MODEL].digest) == 64 and listed[MODEL].modified_at is not None
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"] and shown.details == details
    assert shown.modelinfo["llama.context_length"] == 512 and shown.modelinfo["general.parameter_count"] > 0
    assert "<|im_start|>" in shown.template and "num_predict" in shown.parameters
    assert not any(isinstance(value, list) for value in shown.modelinfo.values()), "no vocabulary in the listing"
    running = {entry.model: entry for entry in client.ps().models}
    assert MODEL in running and running[MODEL].size_vram == 0 and running[MODEL].context_length == 512
    assert running[MODEL].expires_at is not None and running[MODEL].details == details
    assert client.show(f"{MODEL}:latest").details == details, "name:latest is the name"


def test_a_thinking_model_thinks_apart_streamed_or_not_and_says_it_can(server, client):
    args = {"model": THINKING_MODEL, "options": {"temperature": 0}}
    whole = client.chat(**args, messages=HELLO, think=True)
    assert (whole.message.thinking, whole.message.content, whole.eval_count) == ("some thought", "the answer", 6)
    parts = list(client.chat(**args, messages=HELLO, think=True, stream=True))
    thinking = [part for part in parts if part.message.thinking]
    assert "".join(part.message.thinking for part in thinking) == "some thought"
    assert all(part.message.content == "" for part in thinking) and parts[: len(thinking)] == thinking, "first"
    assert streamed_text(parts)[0] == "the answer"
    off = client.chat(**args, messages=HELLO, think=False)
    assert off.message.thinking is None and off.message.content == "the answer"
    generated = client.generate(**args, prompt="hello there", think=True)
    assert (generated.thinking, generated.response) == ("some thought", "the answer")
    pieces = list(client.generate(**args, prompt="hello there", think="high", stream=True))
    assert "".join(part.thinking or "" for part in pieces) == "some thought"
    replayed = client.chat(**args, messages=[*HELLO, whole.message, {"role": "user", "content": "and then?"}])
    plain = [*HELLO, {"role": "assistant", "content": "the answer"}, {"role": "user", "content": "and then?"}]
    assert replayed.prompt_eval_count == client.chat(**args, messages=plain).prompt_eval_count, "thinking left out"
    assert client.show(THINKING_MODEL).capabilities == ["completion", "tools", "thinking"]
    assert requests.get(f"{server}/ollama/api/version", timeout=10).json() == {"version": "0.9.0"}


def test_keep_alive_0_unloads_and_the_next_chat_loads_again(client):
    loaded = client.chat(model=MODEL, messages=[])
    assert loaded.done and loaded.done_reason == "load" and MODEL in [entry.model for entry in client.ps().models]
    unloaded = client.generate(model=MODEL, keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert MODEL not in [entry.model for entry in client.ps().models]
    assert client.chat(model=MODEL, messages=HELLO, options={"num_predict": 1}, keep_alive="5m").done
    assert MODEL in [entry.model for entry in client.ps().models]


@pytest.mark.parametrize(
    "args, status, words",
    [
        ({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, 400, "images are not supported"),
        ({"think": True}, 400, f'"{MODEL}" does not support thinking'),
        ({"options": {"not_an_option": 1}}, 400, "'options.not_an_option' is not an option"),
        ({"options": {"num_predict": 0}}, 400, "'options.num_predict' must be an integer from 1 to 1024"),
        ({"options": {"temperature": 9}}, 400, "'options.temperature' must be a finite number at least 0.0"),
        ({"options": {"presence_penalty": 1}}, 400, "options.presence_penalty is not supported"),
        ({"format": {"type": "object", "propertyNames": {"pattern": "a"}}}, 400, "'format' uses the keyword"),
        ({"keep_alive": "a while"}, 400, "'keep_alive' must be seconds or a duration"),
        ({"model": "llama3.2"}, 404, f"model \"llama3.2\" not found; this server serves '{MODEL}'"),
    ],
)
def test_refused_chats_name_the_field(client, args, status, words):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(**{"model": MODEL, "messages": HELLO, **args})
    assert caught.value.status_code == status and words in caught.value.error


def test_refused_generations_and_model_changes_name_themselves(client):
    cases = [
        (lambda: client.generate(model=MODEL, prompt="hi", template="{{ .Prompt }}"), 400, "template is not"),
        (lambda: client.generate(model=MODEL, prompt="hi", suffix="end"), 400, "suffix"),
        (lambda: client.generate(model=MODEL, prompt="hi", raw=True, system="be brief"), 400, "'system'"),
        (lambda: client.generate(model=MODEL, prompt="hi", context=[1, 2]), 400, "context is deprecated"),
        (lambda: client.pull(MODEL), 400, "is not a model on the Hugging Face Hub"),  # tests/web/ollama/test_pull.py
        (lambda: client.copy(MODEL, "other"), 501, "copying models"),
        (lambda: client.delete(MODEL), 501, "deleting models"),
    ]
    for call, status, words in cases:
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == status and words in caught.value.error, caught.value


def test_keys_are_required_when_set(server):
    keyless = ollama.Client(host=f"{server}/ollama")
    for call in (lambda: keyless.chat(model=MODEL, messages=HELLO), keyless.list, keyless.ps):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 401 and "API key" in caught.value.error
    wrong = ollama.Client(host=f"{server}/ollama", headers={"Authorization": "Bearer nope"})
    with pytest.raises(ollama.ResponseError):
        wrong.generate(model=MODEL, prompt="hi")


def test_the_js_client_chats_streams_and_lists(server):
    node = shutil.which("node")
    assert node and (NODE_MODULES / "ollama").is_dir(), "Ollama's JS client comes from npm: run `npm ci`"
    run = subprocess.run(
        [node, str(JS_CLIENT), f"{server}/ollama", KEY, MODEL],
        capture_output=True,
        text=True,
        timeout=budget(60),
        check=True,
    )
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["whole"] and seen["streamed"] == seen["whole"] and seen["last"]["done"] is True
    assert seen["last"]["eval_count"] >= 1 and seen["generated"]["done_reason"] == "length"
    assert seen["models"] == [MODEL, TOOL_MODEL, THINKING_MODEL] and MODEL in seen["running"]
    assert seen["capabilities"] == ["completion", "tools"] and seen["version"]
    assert seen["refused"]["status"] == 400 and "options.not_an_option" in seen["refused"]["error"]


def test_errors_keep_ollamas_shape_and_their_status(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model, max_body_bytes=2048).test_client()
    body = {"model": MODEL, "messages": HELLO, "stream": False, "options": {"num_predict": 1}}
    nan = '{"model": "chat-llama", "messages": [], "options": {"temperature": NaN}}'
    cases = [
        (client.post("/ollama/api/chat", data="nope", content_type="application/json"), 400, "valid JSON"),
        (client.post("/ollama/api/chat", data=nan, content_type="application/json"), 400, "'options.temperature'"),
        (client.post("/ollama/api/generate", json={**body, "prompt": "x" * 4096}), 413, "at most 2048 bytes"),
        (client.post("/ollama/api/chat", data=json.dumps(body), content_type="text/plain"), 415, "application/json"),
        (client.post("/ollama/api/chat", json=body, headers={"Origin": "https://elsewhere.example"}), 403, "cross"),
        (client.get("/ollama/api/chat"), 405, "not allowed"),
        (client.post("/ollama/api/blobs/sha256:00", json=body), 404, "not found"),
    ]
    for response, status, words in cases:
        assert response.status_code == status and list(response.get_json()) == ["error"]
        assert words in response.get_json()["error"], response.get_json()
    # Ollama's clients send JSON, or no content type at all.
    assert client.post("/ollama/api/chat", data=json.dumps(body)).get_json()["done"] is True


def test_budgets_and_metrics_count_ollamas_generations(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model, token_rate_limit="3/minute", metrics=True).test_client()
    body = {"model": MODEL, "messages": HELLO, "stream": False, "options": {"num_predict": 3, "temperature": 0}}
    assert client.post("/ollama/api/chat", json=body).status_code == 200
    refused = client.post("/ollama/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False})
    assert refused.status_code == 429 and refused.get_json()["error"] and int(refused.headers["Retry-After"]) > 0
    assert client.get("/ollama/api/tags").status_code == 200, "listing generates nothing"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'palaver_requests_total{status="200",surface="ollama"} 2.0' in text
    assert 'palaver_requests_total{status="429",surface="ollama"} 1.0' in text
