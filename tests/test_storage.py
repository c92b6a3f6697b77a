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
from palaver.storage.store import LEASE_SECONDS, ConversationStore
from palaver.types import Reply, Usage


def reply(text, finish_reason="stop"):
    return Reply(text, Usage(5, 2), 0, finish_reason)


@pytest.fixture
def store(database_url):
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=100, idle_seconds=3600)
    yield store
    store.close()


def test_migrations_build_an_empty_database_and_rerun_as_no_ops(database_url):
    database = connect(database_url)
    assert upgrade(database) == head_revision() == "0002"
    assert upgrade(database) == "0002"
    tables = set(sa.inspect(database).get_table_names())
    assert {"conversations", "messages", "alembic_version"} <= tables
    with database.connect() as connection:
        assert current_revision(connection) == "0002"
    database.dispose()


def test_a_database_at_an_older_revision_upgrades_and_keeps_its_conversations(database_url):
    database = connect(database_url)
    with database.begin() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            sa.text(
                "INSERT INTO conversations (id, title, turns, created_at, updated_at) VALUES ('c', 't', 0, :t, :t)"
            ),
            {"t": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    assert upgrade(database) == "0002"
    with database.connect() as connection:
        assert connection.execute(sa.text("SELECT title, cancel_requested FROM conversations")).one() == ("t", False)
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
    store.add_turn("c1", "default", "hello", reply("hi there"))
    store.add_turn("c1", "text-message-check", "again", reply("stopped he", "cancelled"))
    stored = store.get("c1")
    assert [(m.role, m.content) for m in stored.messages] == [
        ("user", "hello"),
        ("assistant", "hi there"),
        ("user", "again"),
        ("assistant", "stopped he"),
    ]
    assert stored.title == "hello" and stored.preset == "text-message-check"
    assert stored.updated_at >= stored.created_at and store.get("missing") is None


def test_a_turn_that_fails_to_write_writes_nothing(store):
    store.add_turn("c1", None, "hello", reply("hi"))
    with pytest.raises(sa.exc.StatementError):
        store.add_turn("c1", None, "\x00" if store.engine.dialect.name == "postgresql" else None, reply("lost"))
    assert [m.content for m in store.get("c1").messages] == ["hello", "hi"]


def test_delete_removes_the_conversation_and_its_messages(store):
    store.add_turn("c1", None, "hello", reply("hi"))
    assert store.delete("c1") and not store.delete("c1")
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM messages")).scalar() == 0


def test_the_sweep_deletes_idle_conversations_then_the_oldest_beyond_the_cap(database_url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=2, idle_seconds=60, clock=lambda: now[0])
    for name in ("old", "a", "b", "c"):
        store.add_turn(name, None, name, reply("x"))
        now[0] += timedelta(seconds=50)
    # "old" is 200 s idle; of a, b and c (150, 100 and 50 s), the cap of 2 keeps the newest two.
    now[0] -= timedelta(seconds=40)
    assert store.sweep() == 2
    assert [name for name in ("old", "a", "b", "c") if store.get(name)] == ["b", "c"]
    database.dispose()


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
    assert store.acquire("c", "first") and store.exists("c") and store.get("c") is None  # running, not yet stored
    assert not store.acquire("c", "second")
    now[0] += timedelta(seconds=LEASE_SECONDS + 1)  # its process died: nobody renewed the lease
    assert store.acquire("c", "second")
    store.add_turn("c", None, "hello", reply("hi"))
    store.release("c", "first")  # a stale holder's release changes nothing
    assert not store.acquire("c", "third")
    store.release("c", "second")
    assert store.acquire("c", "third") and [m.content for m in store.get("c").messages] == ["hello", "hi"]
    database.dispose()


def test_a_first_turn_that_fails_leaves_nothing(store):
    assert store.acquire("new", "token")
    store.release("new", "token")
    assert not store.exists("new") and store.count() == 0


def test_stop_asked_in_another_process_reaches_the_holder(store):
    stopped = threading.Event()
    store.watch(lambda conversation_id: conversation_id == "c" and stopped.set())
    assert not store.request_cancel("c")  # nothing running
    assert store.acquire("c", "token")
    assert store.request_cancel("c") and stopped.wait(5)
    store.release("c", "token")
