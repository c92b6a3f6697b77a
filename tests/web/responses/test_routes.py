"""OpenAI's Responses API, driven by the official openai client (and the Agents SDK) against a real gunicorn server."""

import json
from typing import Literal

import jsonschema
import openai
import pytest
import tiny_models
from pydantic import BaseModel
from servers import start_server

MODEL = "long-chat-llama"
THINKING_MODEL = "thinking-llama"  # answers '<think>\nsome thought\n</think>\n\nthe answer', or the answer alone
KEY, OTHER_KEY = "key-one", "key-two"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
CLOCK = {"type": "function", "name": "get_time", "description": "The time now", "parameters": {"type": "object"}}
SCHEMAS = {tool["name"]: tool["parameters"] for tool in (WEATHER, CLOCK)}
STREAMED_TEXT = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_DONE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def server(long_chat_model, thinking_gguf_model, models_dir, tmp_path_factory):
    """A keyed server on the tiny chat Llama as a GGUF file with room for the tools' listing, on the native step,
    and the tiny thinking Llama beside it.

    The chat Llama's greedy replies are newlines (which a reply leaves out), so it samples with a fixed default seed
    instead: the same request gets the same reply, with text in it.
    """
    model = tiny_models.build_gguf_llama(long_chat_model, models_dir / "long-chat-llama.gguf")
    cache = tmp_path_factory.mktemp("responses")
    keys = f"{KEY}, {OTHER_KEY}"
    models = f"{MODEL}={model},{THINKING_MODEL}={thinking_gguf_model}"
    with start_server("", cache, models=models, api_keys=keys, max_new_tokens="8", temperature="0.8", seed="7") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def test_a_response_follows_openais_objects_and_is_stored(client):
    response = client.responses.create(model=MODEL, input="hello there", instructions="Be brief.", metadata={"a": "b"})
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.instructions == "Be brief."
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and response.output_text == message.content[0].text != ""
    usage = response.usage
    assert usage.input_tokens > 0 and 1 <= usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert response.metadata == {"a": "b"} and response.store and response.tool_choice == "auto"
    assert client.responses.retrieve(response.id) == response
    [item] = client.responses.input_items.list(response.id).data
    assert item.type == "message" and item.role == "user" and item.content[0].text == "hello there"


def test_max_output_tokens_makes_an_incomplete_response(client):
    response = client.responses.create(model=MODEL, input="hello there", max_output_tokens=2)
    tokens, status = response.usage.output_tokens, response.status
    assert (tokens, status) == (2, "incomplete") or tokens < 2 and status == "completed", (tokens, status)
    if status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens" and response.output[-1].status == "incomplete"


def test_a_stream_sends_the_events_in_order_and_the_same_response(client):
    whole = client.responses.create(model=MODEL, input="tell me something", store=False)
    events = list(client.responses.create(model=MODEL, input="tell me something", stream=True))
    kinds = [event.type for event in events]
    deltas = len(kinds) - len(STREAMED_TEXT) - len(TEXT_DONE) - 1
    assert kinds == [*STREAMED_TEXT, *["response.output_text.delta"] * deltas, *TEXT_DONE, f"response.{whole.status}"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response
    assert text == whole.output_text == final.output_text == events[-4].text and deltas > 0
    assert events[0].response.status == "in_progress" and events[0].response.id == final.id
    assert events[2].item.id == events[-2].item.id == final.output[0].id and final.usage == whole.usage
    assert client.responses.retrieve(final.id) == final, "kept before the stream said it was done"
    with client.responses.stream(model=MODEL, input="tell me something") as stream:  # the client's own helper
        helped = list(stream)
    assert "".join(e.delta for e in helped if e.type == "response.output_text.delta") == whole.output_text
    assert helped[-1].response.output_text == whole.output_text


def test_previous_response_id_continues_the_stored_conversation_without_its_instructions(client):
    first = client.responses.create(model=MODEL, input="hello there", instructions="Be brief.")
    then = client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
    replayed = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "again"},
    ]
    explicit = client.responses.create(model=MODEL, input=replayed, store=False)
    alone = client.responses.create(model=MODEL, input="again", store=False)
    assert then.previous_response_id == first.id and then.output_text == explicit.output_text
    assert then.usage.input_tokens == explicit.usage.input_tokens > alone.usage.input_tokens
    third = client.responses.create(model=MODEL, input="more", previous_response_id=then.id, store=False)
    assert third.usage.input_tokens > then.usage.input_tokens, "the chain goes on"


def test_another_keys_response_is_not_found_as_an_unknown_one_is(client, server):
    mine = client.responses.create(model=MODEL, input="hello there")
    stranger = openai.OpenAI(base_url=server + "/v1", api_key=OTHER_KEY, max_retries=0)
    for response_id in (mine.id, "resp_unknown"):
        for ask in (stranger.responses.retrieve, stranger.responses.input_items.list, stranger.responses.delete):
            with pytest.raises(openai.NotFoundError) as caught:
                ask(response_id)
            assert caught.value.body["code"] == "response_not_found" and response_id in caught.value.message
        with pytest.raises(openai.NotFoundError) as caught:
            stranger.responses.create(model=MODEL, input="hi", previous_response_id=response_id)
        assert caught.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(mine.id).id == mine.id, "its owner still has it"


def test_store_false_keeps_nothing_and_delete_forgets(client, server):
    unkept = client.responses.create(model=MODEL, input="hello there", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="again", previous_response_id=unkept.id)
    kept = client.responses.create(model=MODEL, input="hello there")
    deleted = client.with_raw_response.responses.delete(kept.id).http_response.json()
    assert deleted == {"id": kept.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)


def test_input_items_come_in_pages_newest_first(client):
    items = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    items += [
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
    ]
    response = client.responses.create(model=MODEL, input=items, max_output_tokens=1)
    listed = client.responses.input_items.list(response.id)
    assert [item.role for item in listed.data] == ["user", "assistant", "user", "developer"] and not listed.has_more
    assert listed.first_id == listed.data[0].id and listed.last_id == listed.data[-1].id
    assert listed.data[1].content[0].type == "output_text" and listed.data[3].content[0].type == "input_text"
    page = client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [item.role for item in page.data] == ["developer", "user"] and page.has_more
    rest = client.responses.input_items.list(response.id, limit=2, order="asc", after=page.last_id)
    assert [item.role for item in rest.data] == ["assistant", "user"] and not rest.has_more
    assert [item.id for item in client.responses.input_items.list(response.id, limit=1, order="asc")] == [
        item.id for item in reversed(listed.data)
    ], "the client's paging walks every item"
    for query, param in (({"limit": 0}, "limit"), ({"order": "up"}, "order"), ({"after": "msg_nope"}, "after")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.input_items.list(response.id, **query)
        assert caught.value.body["param"] == param


def test_a_required_or_named_tool_call_follows_its_schema_and_its_output_gets_a_reply(client):
    tools, ask = [WEATHER, CLOCK], "weather in Oslo?"
    called = client.responses.create(
        model=MODEL, input=ask, tools=tools, tool_choice="required", parallel_tool_calls=False, max_output_tokens=128
    )
    [call] = called.output
    assert called.status == "completed" and call.type == "function_call" and call.call_id.startswith("call_")
    assert call.id.startswith("fc_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    named = {"type": "function", "name": "get_weather"}
    args = {"model": MODEL, "input": ask, "tools": tools, "tool_choice": named, "max_output_tokens": 128}
    forced = client.responses.create(**args)
    assert [item.name for item in forced.output] == ["get_weather"]
    jsonschema.validate(json.loads(forced.output[0].arguments), WEATHER["parameters"])
    events = list(client.responses.create(**args, stream=True, store=False))
    streamed = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert streamed == done.arguments == forced.output[0].arguments and events[-1].type == "response.completed"

    result = {"type": "function_call_output", "call_id": forced.output[0].call_id, "output": "3 degrees, snow"}
    replayed = [{"role": "user", "content": ask}, forced.output[0].model_dump(exclude_none=True), result]
    answer = client.responses.create(model=MODEL, input=replayed, tools=tools, store=False)
    continued = client.responses.create(model=MODEL, input=[result], tools=tools, previous_response_id=forced.id)
    assert answer.usage.input_tokens == continued.usage.input_tokens, "the call and its result are what it read"
    assert [item.type for item in client.responses.input_items.list(continued.id)] == ["function_call_output"]
    plain = client.responses.create(model=MODEL, input=ask, tools=tools, tool_choice="none", store=False)
    assert all(item.type == "message" for item in plain.output)


def test_a_json_schema_format_holds_the_reply(client):
    class Verdict(BaseModel):
        ok: bool

    parsed = client.responses.parse(model=MODEL, input="is it?", text_format=Verdict, max_output_tokens=16)
    assert isinstance(parsed.output_parsed, Verdict) and parsed.text.format.type == "json_schema"
    any_object = client.responses.create(
        model=MODEL, input="is it?", text={"format": {"type": "json_object"}}, max_output_tokens=32, store=False
    )
    if any_object.status == "completed":
        assert isinstance(json.loads(any_object.output_text), dict)


def test_a_thinking_models_reasoning_is_an_item_before_its_message_streamed_stored_and_left_out_after(client):
    args = {"model": THINKING_MODEL, "input": "hello there", "temperature": 0}
    response = client.responses.create(**args)
    thought, message = response.output
    assert thought.type == "reasoning" and thought.id.startswith("rs_") and thought.summary == []
    assert [part.text for part in thought.content] == ["some thought"] and response.output_text == "the answer"
    assert message.type == "message" and "<think>" not in response.output_text
    assert response.usage.output_tokens == 6 and response.usage.output_tokens_details.reasoning_tokens == 3
    assert client.responses.retrieve(response.id) == response, "stored with its reasoning item"

    events = list(client.responses.create(**args, stream=True, store=False))
    added = [event.item.type for event in events if event.type == "response.output_item.added"]
    streamed = "".join(event.delta for event in events if event.type == "response.reasoning_text.delta")
    done = next(event for event in events if event.type == "response.reasoning_text.done")
    assert added == ["reasoning", "message"] and streamed == done.text == "some thought"
    assert events[-1].response.output[0].content == thought.content and events[-1].response.output_text == "the answer"
    with client.responses.stream(**args, store=False) as stream:  # the client's own helper follows the items
        assert stream.get_final_response().output_text == "the answer"
    for effort in ("none", "minimal"):
        plain = client.responses.create(**args, reasoning={"effort": effort}, store=False)
        assert [item.type for item in plain.output] == ["message"] and plain.output_text == "the answer", effort

    follow_up = {"role": "user", "content": "and then?"}
    replayed = [{"role": "user", "content": "hello there"}, *(i.model_dump(exclude_none=True) for i in response.output)]
    explicit = client.responses.create(model=THINKING_MODEL, input=[*replayed, follow_up], temperature=0)
    continued = client.responses.create(
        model=THINKING_MODEL, input=[follow_up], previous_response_id=response.id, temperature=0, store=False
    )
    assert explicit.usage.input_tokens == continued.usage.input_tokens, "the reasoning is in neither prompt"
    listed = [item.type for item in client.responses.input_items.list(explicit.id, order="asc")]
    assert listed == ["message", "reasoning", "message", "message"]


@pytest.mark.parametrize(
    "args, param",
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type"),
        ({"tool_choice": {"type": "web_search_preview"}, "tools": [WEATHER]}, "tool_choice"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"truncation": "middle"}, "truncation"),
        ({"metadata": {"k": "v" * 600}}, "metadata"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": [], "content": "hmm"}]}, "input[0].content"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"previous_response_id": "not an id"}, "previous_response_id"),
    ],
)
def test_a_refused_field_names_itself(client, args, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**{"model": MODEL, "input": "hi", **args})
    assert caught.value.status_code == 400 and caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["message"]


def test_an_agents_sdk_agent_calls_its_tool_through_the_responses_model(server):
    import agents  # imported here: the SDK is large, and only this test needs it
    from agents.models.openai_responses import OpenAIResponsesModel

    asked = []

    @agents.function_tool
    def get_weather(city: Literal["Oslo", "Paris"]) -> str:
        """Tell the weather in a city."""
        asked.append(city)
        return f"snow in {city}"

    model = OpenAIResponsesModel(model=MODEL, openai_client=openai.AsyncOpenAI(base_url=server + "/v1", api_key=KEY))
    agent = agents.Agent(
        name="forecaster",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=model,
        model_settings=agents.ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=128),
        tool_use_behavior="stop_on_first_tool",
    )
    result = agents.Runner.run_sync(agent, "weather in Oslo?", run_config=agents.RunConfig(tracing_disabled=True))
    assert len(asked) == 1 and result.final_output == f"snow in {asked[0]}"
    [response] = result.raw_responses
    assert response.response_id.startswith("resp_") and response.usage.input_tokens > 0


def test_an_agents_sdk_agent_with_an_output_type_gets_it_through_text_format(server):
    import agents
    import pydantic
    from agents.models.openai_responses import OpenAIResponsesModel

    class Verdict(pydantic.BaseModel):
        sunny: bool

    model = OpenAIResponsesModel(model=MODEL, openai_client=openai.AsyncOpenAI(base_url=server + "/v1", api_key=KEY))
    agent = agents.Agent(
        name="judge",
        instructions="Say whether it is sunny.",
        model=model,
        output_type=Verdict,
        model_settings=agents.ModelSettings(max_tokens=64),
    )
    result = agents.Runner.run_sync(agent, "Oslo, noon", run_config=agents.RunConfig(tracing_disabled=True))
    assert isinstance(result.final_output, Verdict)  # the SDK sent its schema as text.format and parsed the reply


def test_errors_keep_openais_envelope_and_their_status(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model).test_client()
    body = {"model": "chat-llama", "input": "hi", "max_output_tokens": 2}
    kept = client.post("/v1/responses", json=body).get_json()["id"]
    cases = [
        (client.post("/v1/responses", data="nope", content_type="application/json"), 400),
        (client.post("/v1/responses", data=json.dumps(body), content_type="text/plain"), 415),
        (client.get("/v1/responses"), 405),
        (client.get("/v1/responses/resp_x\u0000y"), 404),
        (client.get(f"/v1/responses/{kept}?stream=true"), 400),
        (client.post("/v1/responses/compact", json=body), 405),
    ]
    for response, status in cases:
        assert response.status_code == status and set(response.get_json()["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }
    assert client.delete(f"/v1/responses/{kept}").get_json()["deleted"], "a DELETE needs no content type"


def test_a_conversation_that_does_not_fit_is_refused_unless_truncation_is_auto(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model, max_context_tokens=96).test_client()
    turns = [{"role": "user", "content": "hello there " * 8}, {"role": "assistant", "content": "hi " * 12}] * 2
    body = {"model": "chat-llama", "input": [*turns, {"role": "user", "content": "and now?"}], "max_output_tokens": 2}
    refused = client.post("/v1/responses", json=body)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "context_length_exceeded"
    assert refused.get_json()["error"]["param"] == "input"
    cut = client.post("/v1/responses", json={**body, "truncation": "auto"})
    assert cut.status_code == 200 and int(cut.headers["X-Palaver-Truncated-Turns"]) > 0
    assert cut.get_json()["truncation"] == "auto"


def test_rate_limits_and_metrics_count_responses_as_the_openai_surface(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, rate_limit="2/minute", metrics=True)
    client = app.test_client()
    body = {"model": "chat-llama", "input": "hi", "max_output_tokens": 2, "store": False}
    statuses = [client.post("/v1/responses", json=body).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get("/v1/responses/resp_x").get_json()["error"]["type"] == "rate_limit_error"
    counted = app.extensions["palaver"].metrics.render().decode()  # read directly: /metrics is rate limited too
    assert 'palaver_requests_total{status="200",surface="openai"} 2.0' in counted
    assert 'palaver_requests_total{status="429",surface="openai"} 2.0' in counted
