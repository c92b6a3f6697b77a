"""The database: its URL, and migrations at start-up and by palaver db upgrade, on SQLite and PostgreSQL."""

import subprocess
import sys
import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from commons import Settings
from palaver.storage.database import alembic_config, connect, current_revision, database_url, head_revision, upgrade


def test_migrations_build_an_empty_database_and_rerun_as_no_ops(database_url):
    database = connect(database_url)
    assert upgrade(database) == head_revision() == "0009"
    assert upgrade(database) == "0009"
    tables = set(sa.inspect(database).get_table_names())
    assert {"conversations", "messages", "alembic_version"} <= tables
    with database.connect() as connection:
        assert current_revision(connection) == "0009"
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
    assert upgrade(database) == "0009"
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
