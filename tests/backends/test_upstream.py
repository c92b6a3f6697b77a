"""Two tiers: Palaver web processes with PALAVER_BACKEND=openai in front of a third Palaver that runs the model."""

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import ollama
import openai
import pytest
import requests
from servers import engine_counts, procfile_server, reserved_port, server_env, wait_for_cancelled
from timing import wait_until

FORM_JSON = {"Accept": "application/json"}
UPSTREAM_KEY = "upstream-secret"
THINKING_MODEL = "thinking-llama"  # answers '<think>\nsome thought\n</think>\n\nthe answer', or the answer alone


def upstream_env(model, cache, **settings):
    # Behind web tiers, every request comes with their one key: the tiers bound each client, so this does not.
    return server_env(model, cache, api_keys=UPSTREAM_KEY, max_new_tokens="8", client_share="0", **settings)


@pytest.fixture(scope="module")
def upstream(gguf_chat_model, thinking_gguf_model, tmp_path_factory):
    """The inference tier: a Palaver on the tiny chat model and the tiny thinking model (native), behind an API key."""
    models = f"chat-llama={gguf_chat_model},{THINKING_MODEL}={thinking_gguf_model}"
    env = upstream_env("", tmp_path_factory.mktemp("upstream"), models=models)
    with procfile_server(env, wait_for="/readyz", wait_for_exit=False) as running:
        yield running.url


@pytest.fixture(scope="module")
def long_upstream(slow_gguf_chat_model, tmp_path_factory):
    """An inference tier whose replies may run to 1,024 tokens, seconds long: Stop lands before they end."""
    env = upstream_env(slow_gguf_chat_model, tmp_path_factory.mktemp("long-upstream"), max_context_tokens="2048")
    with procfile_server(env, wait_for="/readyz", timeout=120, wait_for_exit=False) as running:
        yield running.url


def front_env(upstream_url, cache, **settings):
    return server_env(
        "",
        cache,
        backend="openai",
        upstream_url=f"{upstream_url}/v1",
        upstream_api_key=UPSTREAM_KEY,
        **{"max_new_tokens": "6", **settings},
    )


@contextmanager
def web_tier(upstream_url, cache, **settings):
    """Run two Palaver web processes on one database in front of upstream_url; yield their URLs."""
    env = front_env(upstream_url, cache, **settings)
    with ExitStack() as stack:
        servers = [
            stack.enter_context(procfile_server(env, wait_for="/readyz", timeout=60, wait_for_exit=False))
            for _ in range(2)
        ]
        for server in servers:  # neither web process has loaded torch, let alone a model
            worker = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0]
            assert "libtorch" not in Path(f"/proc/{worker}/maps").read_text()
        yield [server.url for server in servers]


@pytest.fixture(scope="module")
def fronts(upstream, tmp_path_factory):
    """The web tier: two Palaver processes on one database, neither of which loads a model."""
    with web_tier(upstream, tmp_path_factory.mktemp("fronts")) as urls:
        yield urls


def test_the_web_tier_loads_no_model_and_reports_the_upstream(fronts, upstream):
    ready = requests.get(f"{fronts[0]}/readyz", timeout=10).json()
    assert ready["state"] == "ready" and ready["backend"] == "openai" and ready["context_tokens"] > 0
    shown = json.dumps(ready)
    assert ready["name"] == "chat-llama" and "127.0.0.1" not in shown and UPSTREAM_KEY not in shown
    models = openai.OpenAI(base_url=f"{fronts[1]}/v1", api_key="unused").models.list().data
    assert [model.id for model in models] == ["chat-llama"]


def test_a_conversation_alternating_between_fronts_keeps_its_memory(fronts):
    browser, conversation_id, prompt_tokens = requests.Session(), None, []
    for step in range(3):
        body = {"message": f"step {step}", "conversation_id": conversation_id}
        reply = browser.post(f"{fronts[step % 2]}/api/chat", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        conversation_id = reply.json()["conversation_id"]
        prompt_tokens.append(reply.json()["usage"]["prompt_tokens"])
        assert reply.json()["usage"]["completion_tokens"] > 0  # its text may be empty: the tiny model may end at once
    assert prompt_tokens == sorted(prompt_tokens) and prompt_tokens[0] < prompt_tokens[-1], "history reached the model"
    page = browser.post(f"{fronts[1]}/", data={"textbox": "from the page"}, headers=FORM_JSON, timeout=30)
    assert page.status_code == 200 and page.json()["conversation_id"]
    # Started without a cookie, the conversation has no owner: only a caller that is nobody reaches it by its id.
    messages = requests.get(f"{fronts[0]}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["step 0", "step 1", "step 2"]


def test_the_openai_client_streams_through_the_web_tier(fronts):
    client = openai.OpenAI(base_url=f"{fronts[0]}/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="chat-llama",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            temperature=1,  # greedy, the quantised tiny model answers with blank lines
            seed=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens == 5
    completion = client.completions.create(model="chat-llama", prompt="Once upon", max_tokens=3, temperature=0)
    assert completion.choices[0].text and completion.choices[0].finish_reason == "length"
    scored = requests.post(f"{fronts[1]}/invocations", json={"inputs": ["hi"], "params": {"max_new_tokens": 3}})
    assert scored.status_code == 200 and scored.json()["predictions"][0]


def test_an_upstreams_reasoning_comes_apart_and_a_thinking_choice_goes_up(upstream, tmp_path):
    env = front_env(upstream, tmp_path, upstream_model=THINKING_MODEL, max_new_tokens="8")
    with procfile_server(env, wait_for="/readyz", timeout=60, wait_for_exit=False) as front:
        client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
        args = {"model": THINKING_MODEL, "messages": [{"role": "user", "content": "hello"}], "temperature": 0}
        completion = client.chat.completions.create(**args)
        message = completion.choices[0].message
        assert (message.content, message.reasoning_content) == ("the answer", "some thought")
        assert completion.usage.completion_tokens_details.reasoning_tokens == 3
        chunks = list(client.chat.completions.create(**args, stream=True))
        deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
        assert "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas) == "some thought"
        assert "".join(delta.content or "" for delta in deltas) == "the answer"
        plain = client.chat.completions.create(**args, reasoning_effort="none").choices[0].message
        assert plain.content == "the answer" and getattr(plain, "reasoning_content", None) is None, "sent on"
        thought = ollama.Client(host=f"{front.url}/ollama").chat(
            model=THINKING_MODEL, messages=args["messages"], think=True, options={"temperature": 0}
        )
        assert (thought.message.thinking, thought.message.content) == ("some thought", "the answer")


@pytest.fixture(scope="module")
def slow_fronts(long_upstream, tmp_path_factory):
    """Two web processes in front of the slow model's tier, replies of up to 64 tokens unless asked for more."""
    with web_tier(long_upstream, tmp_path_factory.mktemp("slow-fronts"), max_new_tokens="64") as urls:
        yield urls


def test_stop_on_one_front_stops_the_upstream_too(slow_fronts, long_upstream):
    stop_on_one_front(slow_fronts, long_upstream)


def stop_on_one_front(fronts, upstream):
    browser = requests.Session()
    started = browser.post(f"{fronts[0]}/", data={"textbox": "hello"}, headers=FORM_JSON, timeout=30).json()
    before = engine_counts(upstream)
    longest = requests.get(f"{fronts[0]}/readyz", timeout=10).json()["max_reply_tokens"]
    stream = browser.post(
        f"{fronts[0]}/",
        data={"textbox": "tell me a long story", "stop": "", "max_new_tokens": str(longest)},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=60,
    )
    assert stream.status_code == 200, stream.text
    events = (json.loads(line[len(b"data: ") :]) for line in stream.iter_lines() if line.startswith(b"data:"))
    shown = next(events)["delta"]
    assert browser.post(f"{fronts[1]}/stop", timeout=10).json() == {"stopped": True}
    for event in events:
        if event.get("done"):
            break
        shown += event.get("delta", "")
    assert event["finish_reason"] == "cancelled" and event["reply"] == shown
    wait_for_cancelled(upstream, before)  # the upstream saw its client go and stopped generating
    kept = browser.get(f"{fronts[1]}/api/conversations/{started['conversation_id']}", timeout=10).json()["messages"]
    assert kept[-1] == {"role": "assistant", "content": shown}


def test_embeddings_are_the_upstreams_own_and_its_refusals_keep_their_status(fronts, upstream):
    texts = ["hello there", "a b"]
    direct = openai.OpenAI(base_url=f"{upstream}/v1", api_key=UPSTREAM_KEY, max_retries=0)
    own = direct.embeddings.create(model="chat-llama", input=texts, encoding_format="float")
    front = openai.OpenAI(base_url=f"{fronts[0]}/v1", api_key="unused", max_retries=0)
    through = front.embeddings.create(model="chat-llama", input=texts)  # base64 from the front, floats behind it
    assert [item.embedding for item in through.data] == [item.embedding for item in own.data]
    assert through.usage.prompt_tokens == own.usage.prompt_tokens > 0
    ollama = requests.post(f"{fronts[1]}/ollama/api/embed", json={"model": "chat-llama", "input": texts}, timeout=30)
    assert ollama.json()["embeddings"] == [item.embedding for item in own.data]
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        front.embeddings.create(model="chat-llama", input="x", dimensions=16)


def test_the_web_tier_validates_and_holds_replies_to_the_upstreams_limits(fronts, upstream):
    before = engine_counts(upstream)
    for body, param in (
        ({"message": "hi", "temperature": float("nan")}, "temperature"),
        ({"message": "hi", "max_new_tokens": 10**9}, "max_new_tokens"),
        ({}, "message"),
    ):
        refused = requests.post(f"{fronts[0]}/api/chat", data=json.dumps(body), timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param
    assert engine_counts(upstream) == before, "nothing invalid reached the upstream"
    limit = requests.get(f"{fronts[0]}/readyz", timeout=10).json()["max_reply_tokens"]
    held = requests.post(
        f"{fronts[0]}/api/chat", json={"message": "hi", "max_new_tokens": limit + 50, "stop": []}, timeout=60
    )
    assert held.status_code == 200 and held.json()["usage"]["completion_tokens"] <= limit
    too_long = requests.post(f"{fronts[0]}/api/chat", json={"message": "word " * 390}, timeout=30)
    assert too_long.status_code == 400 and "too long" in too_long.json()["error"]["message"]


def silent_server(held=None):
    """A socket that accepts connections into held and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = [] if held is None else held
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(16)], daemon=True).start()
    return listener


@pytest.mark.parametrize("case", ["unreachable", "wrong key", "silent", "rate limited"])
def test_upstream_failures_map_to_palavers_errors(case, upstream, gguf_chat_model, tmp_path):
    with ExitStack() as stack:
        settings = {}
        target = upstream
        if case == "unreachable":  # a port held and never listened on refuses every connection
            target = f"http://127.0.0.1:{stack.enter_context(reserved_port())}"
        elif case == "silent":
            listener = stack.enter_context(silent_server())
            target, settings = f"http://127.0.0.1:{listener.getsockname()[1]}", {"request_timeout": "2"}
        elif case == "rate limited":
            limited_env = server_env(
                gguf_chat_model, tmp_path / "limited", api_keys=UPSTREAM_KEY, rate_limit="3/minute"
            )
            target = stack.enter_context(procfile_server(limited_env, timeout=120, wait_for_exit=False)).url
        env = front_env(target, tmp_path / "front", **settings)
        if case == "wrong key":
            env["PALAVER_UPSTREAM_API_KEY"] = "not-the-key"
        front = stack.enter_context(procfile_server(env, timeout=60, wait_for_exit=False))
        for _ in range(4 if case == "rate limited" else 1):  # the third upstream call (after /models) is refused
            answer = requests.post(f"{front.url}/api/chat", json={"message": "hi"}, timeout=30)
            if answer.status_code != 200:
                break
        expected = {"unreachable": 503, "wrong key": 503, "silent": 504, "rate limited": 429}[case]
        assert answer.status_code == expected, answer.text
        if expected != 504:
            assert int(answer.headers["Retry-After"]) > 0
        assert "Traceback" not in answer.text and UPSTREAM_KEY not in answer.text
        assert "Traceback" not in front.log()


def test_a_dead_upstream_is_not_asked_again_for_every_waiting_request(tmp_path):
    held = []
    with silent_server(held) as listener:
        env = front_env(f"http://127.0.0.1:{listener.getsockname()[1]}", tmp_path / "front", request_timeout="2")
        with procfile_server(env, timeout=60, wait_for_exit=False) as front:
            with ThreadPoolExecutor(6) as pool:
                answers = list(
                    pool.map(
                        lambda _: requests.post(f"{front.url}/api/chat", json={"message": "hi"}, timeout=60), range(6)
                    )
                )
            assert [answer.status_code for answer in answers] == [504] * 6
            # The look-up at start-up, and at most one more: the rest were answered from the failed look-up.
            assert len(held) <= 2, f"{len(held)} look-ups for 6 requests"


def test_a_web_tier_started_before_its_upstream_becomes_ready_when_the_upstream_comes_up(gguf_chat_model, tmp_path):
    with reserved_port() as port, procfile_server(front_env(f"http://127.0.0.1:{port}", tmp_path / "front")) as front:
        ready = f"{front.url}/readyz"
        wait_until(lambda: requests.get(ready, timeout=10).json()["state"] == "failed", 30, "the first look-up failing")
        assert requests.get(ready, timeout=10).status_code == 503
        env = server_env(gguf_chat_model, tmp_path / "late", api_keys=UPSTREAM_KEY)
        with procfile_server(env, wait_for="/readyz", timeout=120, port=port):
            wait_until(lambda: requests.get(ready, timeout=10).status_code == 200, 30, "the web tier becoming ready")
            assert requests.post(f"{front.url}/api/chat", json={"message": "hi"}, timeout=30).status_code == 200


def test_tools_and_logprobs_pass_through_to_the_upstream(slow_fronts):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 8}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    named = {"type": "function", "function": {"name": "get_weather"}}
    asked = [{"role": "user", "content": "weather?"}]
    client = openai.OpenAI(base_url=f"{slow_fronts[0]}/v1", api_key="unused", max_retries=0)
    args = {"model": "slow-chat-llama", "messages": asked, "tools": tools, "tool_choice": named, "max_tokens": 64}
    message = client.chat.completions.create(**args, temperature=0).choices[0].message
    call = message.tool_calls[0]
    assert call.function.name == "get_weather" and set(json.loads(call.function.arguments)) == {"city"}
    streamed = "".join(
        part.function.arguments
        for chunk in client.chat.completions.create(**args, temperature=0, stream=True)
        for choice in chunk.choices
        for part in choice.delta.tool_calls or []
    )
    assert streamed == call.function.arguments, "the upstream's call deltas reassemble"
    answered = [
        *asked,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sun"},
    ]
    follow_up = client.chat.completions.create(
        model="slow-chat-llama", messages=answered, max_tokens=3, logprobs=True, top_logprobs=2, temperature=0
    ).choices[0]
    assert len(follow_up.logprobs.content) == 3 and all(len(e.top_logprobs) == 2 for e in follow_up.logprobs.content)
    text = client.completions.create(model="slow-chat-llama", prompt="Once", max_tokens=3, logprobs=1).choices[0]
    assert len(text.logprobs.tokens) == 3 and all(len(top) == 1 for top in text.logprobs.top_logprobs)


def test_a_conversation_sent_upstream_keeps_at_most_its_turn_count_in_blocks_and_says_how_many_went():
    from palaver.backends.upstream import sent_history
    from palaver.core.config import Settings
    from palaver.core.requests import GenerationRequest
    from palaver.core.types import Message

    turns = [Message("user" if index % 2 == 0 else "assistant", f"turn {index}") for index in range(21)]
    params = Settings().generation_defaults()
    messages, dropped = sent_history(
        GenerationRequest(params, messages=[Message("system", "be brief"), *turns], max_history=8)
    )
    assert dropped == 12 and [m.content for m in messages] == ["be brief", *(m.content for m in turns[12:])]
    assert sent_history(GenerationRequest(params, messages=turns)) == (turns, 0), "the API's history is the client's"
    assert sent_history(GenerationRequest(params, prompt="x", max_history=8)) == (None, 0)
