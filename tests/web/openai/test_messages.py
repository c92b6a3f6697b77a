"""Chat messages as OpenAI sends them: text, an assistant's calls, and tools' results, each in its own role."""

import pytest

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
