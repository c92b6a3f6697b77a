"""Stored responses on real SQLite and PostgreSQL: kept whole, seen by their owner only, deleted, and swept."""

from datetime import UTC, datetime, timedelta

from palaver.core.types import Message, ToolCall
from palaver.storage.responses import StoredResponse

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONVERSATION = [
    Message("user", "weather in Oslo?\u0000"),  # a NUL reaches PostgreSQL only escaped, as JSON writes it
    Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
    Message("tool", "snow", tool_call_id="call_1"),
]


def response(response_id: str, owner: str | None = None, client: str | None = None, at: datetime = NOW):
    body = {"id": response_id, "object": "response", "output": []}
    return StoredResponse(response_id, owner, client, at, body, [{"id": "msg_1", "type": "message"}], CONVERSATION)


def test_a_response_is_kept_whole_and_only_its_owner_sees_it(store):
    responses = store.responses
    responses.put(response("resp_a", owner="key:a"))
    responses.put(response("resp_open"))
    found = responses.get("resp_a", "key:a")
    assert found == response("resp_a", owner="key:a") and found.conversation == CONVERSATION
    assert responses.get("resp_a", "key:b") is None and responses.get("resp_a") is None
    assert responses.get("resp_open") is not None and responses.get("resp_open", "key:a") is None
    assert not responses.delete("resp_a", "key:b") and not responses.delete("resp_open", "key:a")
    assert responses.delete("resp_a", "key:a") and responses.get("resp_a", "key:a") is None
    assert not responses.delete("resp_a", "key:a")


def test_the_sweep_takes_old_responses_then_the_largest_pools_oldest_first(store):
    responses = store.responses
    responses.put(response("resp_old", client="a", at=NOW - timedelta(days=2)))
    for index in range(4):
        responses.put(response(f"resp_flood{index}", client="flood", at=NOW + timedelta(seconds=index)))
    responses.put(response("resp_quiet", client="quiet", at=NOW))
    assert responses.sweep(cap=4, cutoff=NOW - timedelta(days=1)) == 2
    kept = [name for name in ("resp_old", "resp_quiet", *(f"resp_flood{i}" for i in range(4))) if responses.get(name)]
    assert kept == ["resp_quiet", "resp_flood1", "resp_flood2", "resp_flood3"]


def test_the_stores_own_sweep_takes_idle_responses_with_idle_conversations(store):
    store.responses.put(response("resp_idle", at=datetime.now(UTC) - timedelta(days=1)))
    store.responses.put(response("resp_fresh", at=datetime.now(UTC)))
    assert store.sweep() == 1 and store.responses.get("resp_idle") is None and store.responses.get("resp_fresh")
