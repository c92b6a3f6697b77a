"""What the store hands out: one summary type, written with the API's field names, and titles."""

from datetime import UTC, datetime

from palaver.storage.records import ConversationSummary, StoredConversation, StoredMessage, as_utc, auto_title

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_summary_is_written_as_the_api_names_it_and_a_whole_conversation_with_its_messages():
    summary = ConversationSummary(id="c1", title="t", preset=None, turns=1, created_at=NOW, updated_at=NOW)
    assert summary.model_dump(mode="json")["conversation_id"] == "c1" and "id" not in summary.model_dump()
    message = StoredMessage(role="user", content="hi", created_at=NOW, prompt_tokens=3)
    whole = StoredConversation(**dict(summary), records=[message], first_turn=4)
    written = whole.model_dump(mode="json")
    assert written["messages"][0]["content"] == "hi" and "first_turn" not in written and "records" not in written
    assert whole.messages[0].as_dict() == {"role": "user", "content": "hi"}


def test_titles_are_one_line_and_times_come_back_in_utc():
    assert auto_title("  two\n lines  and " + "x" * 200) == ("two lines and " + "x" * 200)[:80]
    assert as_utc(datetime(2026, 1, 1)) == NOW
