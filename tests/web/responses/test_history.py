"""A response's history: the stored one it continues (another's is unknown), and what it keeps for the next."""

import pytest

from commons import Settings
from palaver.core.errors import NotFound
from palaver.core.types import Message, Reply, ToolCall, Usage
from palaver.storage.database import connect, upgrade
from palaver.storage.responses import ResponseStore
from palaver.web.responses.history import earlier_conversation, is_response_id, keeper, reply_message, stored
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.response_schemas import ResponseObject


@pytest.fixture
def responses(tmp_path):
    database = connect(f"sqlite:///{tmp_path / 'palaver.db'}")
    upgrade(database)
    yield ResponseStore(database)
    database.dispose()


def request(**fields) -> ResponsesRequest:
    return ResponsesRequest.parse({"model": "m", "input": "hello", **fields}, {"settings": Settings()})


def finished(given: ResponsesRequest, reply: Reply) -> ResponseObject:
    started = ResponseObject.started(given, "chat-llama", Settings().generation_defaults())
    return started.finished(reply, "msg_1")


def test_a_kept_response_is_continued_by_its_owner_with_its_reply_and_by_nobody_else(responses):
    given = request(instructions="Be brief.")
    conversation = given.continued([])
    response = finished(given, Reply("hi there", Usage(5, 2), 0, "stop"))
    keeper(responses, given, conversation, "key:a", "key:a", most=256)(response)
    follow = request(input="again", previous_response_id=response.id)
    assert earlier_conversation(responses, follow, "key:a") == [
        Message("user", "hello"),
        Message("assistant", "hi there"),
    ]
    for stranger in ("key:b", None):
        with pytest.raises(NotFound) as caught:
            earlier_conversation(responses, follow, stranger)
        assert caught.value.param == "previous_response_id" and caught.value.code == "response_not_found"
    assert stored(responses, response.id, "key:a").body == response.model_dump()
    assert stored(responses, response.id, "key:a").input_items[0]["content"][0]["text"] == "hello"
    with pytest.raises(NotFound):
        stored(responses, "resp_\u0000", "key:a")  # never reaches the database
    assert earlier_conversation(responses, request(), "key:a") == []


def test_store_false_keeps_nothing_and_the_kept_conversation_is_bounded(responses):
    given = request(store=False)
    response = finished(given, Reply("hi", Usage(5, 1), 0, "stop"))
    keeper(responses, given, given.continued([]), None, None, most=256)(response)
    assert responses.get(response.id) is None
    long = [Message("user", f"turn {i}") if i % 2 == 0 else Message("assistant", "ok") for i in range(40)]
    given = request(input="last")
    response = finished(given, Reply("fine", Usage(5, 1), 0, "stop"))
    keeper(responses, given, given.continued(long), None, None, most=8)(response)
    kept = responses.get(response.id).conversation
    assert len(kept) <= 9 and kept[-2:] == [Message("user", "last"), Message("assistant", "fine")]


def test_a_reply_message_holds_the_text_and_the_calls_and_an_empty_reply_none():
    call = ToolCall("call_a", "get_time", "{}")
    assert reply_message(finished(request(), Reply("", Usage(5, 3), 0, "tool_calls", tool_calls=(call,)))) == Message(
        "assistant", "", tool_calls=(call,)
    )
    assert reply_message(finished(request(), Reply("", Usage(5, 3), 0, "stop"))) is None
    assert is_response_id("resp_abc") and not is_response_id("resp abc") and not is_response_id("x" * 65)
