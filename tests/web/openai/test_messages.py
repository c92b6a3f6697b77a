"""Chat messages as OpenAI sends them: text, an assistant's calls, and tools' results, each in its own role."""

import json

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessage

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.types import Message, ToolCall
from palaver.web.openai.request_schemas import ChatCompletionRequest

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}


def messages(*given):
    body = {"model": "m", "messages": [{"role": "user", "content": "time?"}, *given]}
    return [m.to_message() for m in ChatCompletionRequest.parse(body, {"settings": Settings()}).messages]


def test_calls_and_results_become_the_engines_messages():
    parsed = messages(
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "12:00"}]},
    )
    assert parsed[1] == Message("assistant", "", tool_calls=(ToolCall("call_1", "get_time", "{}"),))
    assert parsed[2] == Message("tool", "12:00", tool_call_id="call_1")


@pytest.mark.parametrize(
    "message, param, words",
    [
        ({"role": "tool", "content": "x"}, "messages[1].tool_call_id", "needs 'tool_call_id'"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "messages[1].tool_call_id", "no other message"),
        ({"role": "user", "content": "x", "tool_calls": [CALL]}, "messages[1].tool_calls", "only assistant"),
        ({"role": "assistant"}, "messages[1].content", "except an assistant's that has 'tool_calls'"),
        ({"role": "tool", "tool_call_id": "c"}, "messages[1].content", "needs 'content'"),
        (
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get time", "arguments": "{}"}}]},
            "messages[1].tool_calls[0].function.name",
            "must match the pattern",
        ),
        (
            {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]},
            "messages[1].tool_calls[0].type",
            "function",
        ),
    ],
)
def test_a_message_out_of_its_role_names_the_field(message, param, words):
    with pytest.raises(InvalidRequest) as caught:
        messages(message)
    assert caught.value.param == param and words in caught.value.message, caught.value.message


# An assistant message as OpenAI's API returns it today: every field present, most of them empty.
OPENAI_REPLY = {
    "role": "assistant",
    "content": "Hello! How can I help?",
    "refusal": None,
    "annotations": [],
    "audio": None,
    "function_call": None,
    "tool_calls": [],
}


def test_a_reply_replayed_with_openais_empty_fields_is_the_reply():
    assert messages(OPENAI_REPLY)[1] == Message("assistant", "Hello! How can I help?")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("annotations", [{"type": "url_citation", "url_citation": {"url": "https://x"}}], "annotations"),
        ("refusal", "I can't help with that.", "refusal is not supported; send the refusal's text as 'content'"),
        ("audio", {"id": "audio_1"}, "audio is not supported"),
        ("function_call", {"name": "f", "arguments": "{}"}, "function_call is deprecated"),
    ],
)
def test_a_replayed_field_that_says_something_is_refused_by_name(field, value, words):
    content = None if field == "refusal" else "x"  # a refusal comes back in place of content
    with pytest.raises(InvalidRequest) as caught:
        messages({**OPENAI_REPLY, "content": content, field: value})
    assert caught.value.param == f"messages[1].{field}" and words in caught.value.message, caught.value.message
    assert caught.value.code == "unsupported_parameter"


def test_the_openai_client_replays_a_transcript_against_a_real_server(server):
    sent: list[dict] = []

    def record(request: httpx2.Request) -> None:
        sent.append(json.loads(request.read()))

    http = httpx2.Client(event_hooks={"request": [record]})
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, http_client=http)
    history: list = [{"role": "user", "content": "hello"}]
    completion = client.chat.completions.create(model="chat-llama", messages=history, max_tokens=2, tools=[])
    history += [completion.choices[0].message, {"role": "user", "content": "and then?"}]  # Palaver's own reply
    history += [ChatCompletionMessage.model_validate(OPENAI_REPLY), {"role": "user", "content": "go on"}]  # OpenAI's
    assert client.chat.completions.create(model="chat-llama", messages=history, max_tokens=2).choices
    replayed = sent[-1]["messages"][3]
    assert replayed["annotations"] == [] and "refusal" in replayed, "the client sends back every field it read"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat-llama", messages=history, tools=[], tool_choice="required")
    assert "'tool_choice' 'required' needs at least one function in 'tools'" in caught.value.message
