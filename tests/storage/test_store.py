"""Conversation storage on real SQLite and PostgreSQL: migrations, turns, deletion and the retention sweep."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from stored import reply, store_turn

from palaver.core.types import Message, Reply, Usage
from palaver.storage.database import connect, upgrade
from palaver.storage.records import AUTO_TITLE_CHARS
from palaver.storage.store import ConversationStore


def test_a_turn_is_stored_whole_and_in_order(store):
    store_turn(store, "c1", "hello", "hi there", "default")
    store_turn(store, "c1", "again", reply("stopped he", "cancelled"), "text-message-check")
    stored = store.get("c1")
    assert [(m.role, m.content) for m in stored.messages] == [
        ("user", "hello"),
        ("assistant", "hi there"),
        ("user", "again"),
        ("assistant", "stopped he"),
    ]
    assert stored.title == "hello" and stored.preset == "text-message-check" and stored.turns == 2
    assert stored.updated_at >= stored.created_at and store.get("missing") is None
    user, answer = stored.records[2:]
    assert (user.prompt_tokens, user.completion_tokens, user.finish_reason) == (5, None, None)
    assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (None, 2, "cancelled")
    assert answer.created_at.tzinfo == UTC and stored.updated_at.tzinfo == UTC


def test_a_thinking_models_reasoning_is_stored_apart_and_never_in_the_history(store):
    thought = Reply("the answer", Usage(5, 6, 3), 0, "stop", reasoning="some <b>thought</b>")
    store_turn(store, "c", "hello", thought)
    stored = store.get("c")
    assert [(r.content, r.reasoning) for r in stored.records] == [("hello", ""), ("the answer", "some <b>thought</b>")]
    assert stored.messages[1] == Message("assistant", "the answer"), "the next prompt reads the answer alone"


def test_a_title_is_the_start_of_the_first_message_on_one_line(store):
    store_turn(store, "c", "  What is\n\tthe   answer? " + "x" * 200)
    assert store.get("c").title == ("What is the answer? " + "x" * 200)[:AUTO_TITLE_CHARS]


def test_an_owner_uses_only_its_own_conversations_and_only_the_ownerless_use_unowned_ones(store):
    store_turn(store, "mine", "hello", owner="browser:a")
    store_turn(store, "open", "hello")
    assert store.get("mine", "browser:a") and store.exists("mine", "browser:a")
    for stranger in ("browser:b", None):
        assert store.get("mine", stranger) is None and not store.exists("mine", stranger)
        assert not store.leases.acquire("mine", "token", stranger)
        assert not store.rename("mine", stranger, "taken") and not store.delete("mine", stranger)
    assert store.get("open") and store.exists("open")  # no owner: its id alone opens it, for the ownerless
    assert store.get("open", "browser:b") is None and not store.exists("open", "browser:b")  # never for someone
    assert not store.leases.acquire("open", "token", "browser:b")
    assert not store.rename("open", "browser:b", "taken") and not store.delete("open", "browser:b")
    assert store.rename("mine", "browser:a", "Renamed") and store.get("mine", "browser:a").title == "Renamed"
    assert [c.id for c in store.owned("browser:a", 10)] == ["mine"] and store.owned("browser:b", 10) == []


def test_a_browsers_conversations_move_to_a_person_whole_and_no_one_elses_do(store):
    store_turn(store, "first", "hello", owner="browser:a")
    store_turn(store, "second", "hello", owner="browser:a")
    store_turn(store, "theirs", "hello", owner="browser:b")
    store_turn(store, "open", "hello")
    assert store.count_owned("browser:a") == 2 and store.count_owned("person:p") == 0
    assert store.transfer("browser:a", "person:p") == 2
    assert sorted(c.id for c in store.owned("person:p", 10)) == ["first", "second"]
    assert store.count_owned("browser:a") == 0 and store.get("first", "browser:a") is None
    assert store.get("theirs", "browser:b") and store.get("open")


def test_an_owners_conversations_page_newest_first_without_loss_or_repeats(database_url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, 100, 3600, clock=lambda: now[0])
    for index in range(5):
        store_turn(store, f"a{index}", f"mine {index}", owner="browser:a")
        now[0] += timedelta(seconds=1) if index < 2 else timedelta(0)  # a2, a3 and a4 share one time
    store_turn(store, "theirs", "theirs", owner="browser:b")
    now[0] += timedelta(seconds=1)
    store_turn(store, "a0", "again", owner="browser:a")  # its new turn makes it the newest
    pages, after = [], None
    while page := store.owned("browser:a", 2, after):
        pages.append([c.id for c in page])
        after = (page[-1].updated_at, page[-1].id)
    assert pages == [["a0", "a4"], ["a3", "a2"], ["a1"]]
    database.dispose()


def test_a_conversation_deleted_during_its_turn_stays_deleted(store):
    store_turn(store, "c", "hello")
    assert store.leases.acquire("c", "token")
    assert store.delete("c")
    assert not store.add_turn("c", None, "again", reply("too late"))
    store.leases.release("c", "token")
    assert not store.exists("c")
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM messages")).scalar() == 0


def test_a_turn_that_fails_to_write_writes_nothing(store):
    store_turn(store, "c1", "hello")
    with pytest.raises(sa.exc.StatementError):
        store_turn(store, "c1", "\x00" if store.engine.dialect.name == "postgresql" else None, "lost")
    assert [m.content for m in store.get("c1").messages] == ["hello", "hi"]


def test_delete_removes_the_conversation_and_its_messages(store):
    store_turn(store, "c1", "hello")
    assert store.delete("c1") and not store.delete("c1")
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM messages")).scalar() == 0


def test_a_window_reads_only_the_turns_it_names(store):
    for turn in range(7):
        store_turn(store, "c", f"question {turn}", f"answer {turn}")
    last_three = store.get("c", window=lambda turns: range(turns - 3, turns))
    assert last_three.turns == 7 and last_three.first_turn == 4
    assert [m.content for m in last_three.messages] == [
        f"{kind} {turn}" for turn in (4, 5, 6) for kind in ("question", "answer")
    ]
    assert store.get("c", window=lambda turns: range(0, 0)).records == []


def test_search_ignores_case_for_every_letter(store):
    store_turn(store, "c", "Mon école est grande", owner="browser:o")
    store_turn(store, "d", "ΣΟΦΙΑ and ISTANBUL", owner="browser:o")
    assert [c.id for c in store.owned("browser:o", 10, matching="ÉCOLE")] == ["c"]
    assert [c.id for c in store.owned("browser:o", 10, matching="σοφια")] == ["d"]
    assert store.owned("browser:o", 10, matching="100%") == []


def test_the_last_turn_is_replaced_in_place_with_its_reply_time(store):
    store_turn(store, "c1", "first", "one", owner="browser:a")
    store_turn(store, "c1", "second", "two", owner="browser:a")
    assert store.leases.acquire("c1", "turn", "browser:a")
    assert store.add_turn("c1", None, "second, edited", reply("three"), seconds=1.5, replace_last=True)
    store.leases.release("c1", "turn")
    stored = store.get("c1", "browser:a")
    assert [r.content for r in stored.records] == ["first", "one", "second, edited", "three"]
    assert stored.turns == 2 and stored.records[3].seconds == 1.5 and stored.records[1].seconds is None
    assert stored.title == "first"


def test_an_owners_conversations_are_searched_by_title_and_text_in_any_case(store):
    store_turn(store, "c1", "Bread recipes", "Flour, WATER and salt", owner="browser:a")
    store_turn(store, "c2", "Weather", "Rain in 100% of Oslo_west", owner="browser:a")
    store_turn(store, "c3", "bread for someone else", owner="browser:b")
    found = {
        text: [c.id for c in store.owned("browser:a", 10, matching=text)]
        for text in ["bread", "water", "OSLO", "100%", "_west", "%", "nothing"]
    }
    assert found == {
        "bread": ["c1"],
        "water": ["c1"],
        "OSLO": ["c2"],
        "100%": ["c2"],
        "_west": ["c2"],
        "%": ["c2"],
        "nothing": [],
    }
