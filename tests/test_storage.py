"""Conversation storage on real SQLite and PostgreSQL: migrations, turns, deletion and the retention sweep."""

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from commons import Settings
from palaver.storage.database import alembic_config, connect, current_revision, database_url, head_revision, upgrade
from palaver.storage.leases import HEARTBEAT_SECONDS, LEASE_SECONDS
from palaver.storage.store import AUTO_TITLE_CHARS, ConversationStore, fair_level
from palaver.types import Reply, Usage


def reply(text, finish_reason="stop"):
    return Reply(text, Usage(5, 2), 0, finish_reason)


def store_turn(store, conversation_id, user_text, answer="hi", preset=None, owner=None, client=None):
    """Store a turn as Chat does: under the conversation's lease."""
    assert store.leases.acquire(conversation_id, "turn", owner, client)
    try:
        return store.add_turn(conversation_id, preset, user_text, reply(answer) if isinstance(answer, str) else answer)
    finally:
        store.leases.release(conversation_id, "turn")


@pytest.fixture
def store(database_url):
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=100, idle_seconds=3600)
    yield store
    store.close()


def test_migrations_build_an_empty_database_and_rerun_as_no_ops(database_url):
    database = connect(database_url)
    assert upgrade(database) == head_revision() == "0004"
    assert upgrade(database) == "0004"
    tables = set(sa.inspect(database).get_table_names())
    assert {"conversations", "messages", "alembic_version"} <= tables
    with database.connect() as connection:
        assert current_revision(connection) == "0004"
    database.dispose()


def test_a_database_at_an_older_revision_upgrades_and_keeps_its_conversations(database_url):
    database = connect(database_url)
    with database.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            sa.text(
                "INSERT INTO conversations (id, owner, title, turns, created_at, updated_at) "
                "VALUES ('c', 'browser:b', 't', 0, :t, :t)"
            ),
            {"t": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    assert upgrade(database) == "0004"
    with database.connect() as connection:
        found = connection.execute(sa.text("SELECT title, cancel_requested, client FROM conversations")).one()
        assert found == ("t", False, "browser:b"), "an owner's old conversations are its pool"
    database.dispose()


def test_concurrent_starts_migrate_once(database_url):
    errors = []

    def start():
        try:
            database = connect(database_url)
            upgrade(database)
            database.dispose()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


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


def test_the_sweep_deletes_idle_conversations_then_the_oldest_beyond_the_cap(database_url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=2, idle_seconds=60, clock=lambda: now[0])
    for name in ("old", "a", "b", "c"):
        store_turn(store, name, name)
        now[0] += timedelta(seconds=50)
    # "old" is 200 s idle; of a, b and c (150, 100 and 50 s), the cap of 2 keeps the newest two.
    now[0] -= timedelta(seconds=40)
    assert store.sweep() == 2
    assert [name for name in ("old", "a", "b", "c") if store.get(name)] == ["b", "c"]
    database.dispose()


def test_past_the_cap_a_flooding_client_loses_only_its_own_conversations(database_url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=30, idle_seconds=3600, clock=lambda: now[0])
    store_turn(store, "user's", "mine", owner="browser:u", client="address:10.0.0.1")
    for index in range(60):  # the flood comes later, so a global least-recently-used cap would take "user's" first
        now[0] += timedelta(seconds=1)
        store_turn(store, f"flood-{index:02}", "x", client="address:10.0.0.66")
    store_turn(store, "keyed", "k", owner="key:abc", client="key:abc")
    assert store.sweep() == 32
    assert store.get("user's", "browser:u") is not None and store.get("keyed", "key:abc") is not None
    kept = [index for index in range(60) if store.get(f"flood-{index:02}")]
    assert kept == list(range(32, 60)), "the flood keeps its newest, within the level every pool fits under"
    assert store.count() == 30
    database.dispose()


def test_fair_level_trims_only_the_largest_pools():
    assert fair_level([1, 60], 30) == 29
    assert fair_level([10, 10, 10], 30) == 10
    assert fair_level([5, 50, 50], 45) == 20
    assert fair_level([3], 0) == 0 and fair_level([], 5) == 0


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


def test_postgres_urls_are_normalised_for_psycopg_and_sqlite_lives_in_the_cache(tmp_path):
    assert database_url("postgres://u:p@h/db", "") == "postgresql+psycopg://u:p@h/db"
    assert database_url("postgresql://u@h/db", "") == "postgresql+psycopg://u@h/db"
    assert database_url("", str(tmp_path)) == f"sqlite:///{tmp_path / 'palaver.db'}"
    assert Settings.from_env({"DATABASE_URL": "postgres://h/db"}).database_url == "postgres://h/db"
    both = {"DATABASE_URL": "postgres://h/db", "PALAVER_DATABASE_URL": "sqlite:///x.db"}
    assert Settings.from_env(both).database_url == "sqlite:///x.db"


def test_palaver_db_upgrade_migrates_the_configured_database(database_url, tmp_path):
    env = {"PALAVER_DATABASE_URL": database_url, "PALAVER_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "palaver", "db", "upgrade"]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert f"is at revision {head_revision()}" in done.stdout and "password" not in done.stdout


def test_one_lease_at_a_time_and_a_dead_holders_lease_runs_out(database_url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, 100, 3600, clock=lambda: now[0])
    assert (
        store.leases.acquire("c", "first") and store.exists("c") and store.get("c") is None
    )  # running, not yet stored
    assert not store.leases.acquire("c", "second")
    now[0] += timedelta(seconds=LEASE_SECONDS + 1)  # its process died: nobody renewed the lease
    assert store.leases.acquire("c", "second")
    store.add_turn("c", None, "hello", reply("hi"))
    store.leases.release("c", "first")  # a stale holder's release changes nothing
    assert not store.leases.acquire("c", "third")
    store.leases.release("c", "second")
    assert store.leases.acquire("c", "third") and [m.content for m in store.get("c").messages] == ["hello", "hi"]
    database.dispose()


def test_a_first_turn_that_fails_leaves_nothing(store):
    assert store.leases.acquire("new", "token")
    store.leases.release("new", "token")
    assert not store.exists("new") and store.count() == 0


def test_stop_asked_in_another_process_reaches_the_holder(store):
    stopped = threading.Event()
    store.leases.watch(lambda conversation_id, token: (conversation_id, token) == ("c", "token") and stopped.set())
    assert not store.leases.request_cancel("c")  # nothing running
    assert store.leases.acquire("c", "token")
    assert store.leases.request_cancel("c") and stopped.wait(5)
    store.leases.release("c", "token")


def test_a_holder_is_told_to_stop_when_its_conversation_is_deleted(store):
    stopped = threading.Event()
    store.leases.watch(lambda conversation_id, token: (conversation_id, token) == ("c", "token") and stopped.set())
    store_turn(store, "c", "hello")
    assert store.leases.acquire("c", "token")
    assert not stopped.wait(3 * HEARTBEAT_SECONDS)  # renewed, not stopped, while its row is there
    assert store.delete("c") and stopped.wait(5)
    store.leases.release("c", "token")


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
