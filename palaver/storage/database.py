"""The database: its URL, its engine, and the migrations applied at start-up and by `palaver db upgrade`."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x70616C61  # "pala": one advisory lock so that concurrent starts migrate once


UNICODE_LOWER = "palaver_lower"


def unicode_lower(text: object) -> object:
    return text.lower() if isinstance(text, str) else text


def lowered(engine: sa.Engine, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """Return column in lower case for a search, for every letter on every database."""
    return getattr(sa.func, UNICODE_LOWER if engine.dialect.name == "sqlite" else "lower")(column)


def database_url(configured: str, cache_dir: str) -> str:
    """Return the SQLAlchemy URL to use: the configured one, else SQLite in the cache directory."""
    url = configured
    if not url:
        return f"sqlite:///{Path(cache_dir) / 'palaver.db'}"
    for prefix in ("postgres://", "postgresql://"):  # Heroku still hands out postgres://; psycopg 3 is the driver
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(url: str) -> sa.Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # SQLite's own lower() folds ASCII only: searching 'ÉCOLE' must find 'école', as on PostgreSQL.
            dbapi_connection.create_function(UNICODE_LOWER, 1, unicode_lower, deterministic=True)

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> str:
    """Apply every migration not yet applied; return the revision the database is at."""
    with migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(connection), "head")
        return current_revision(connection) or ""


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head() or ""


@contextmanager
def migration_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold a file lock beside a SQLite database while migrating, so concurrent starts migrate once."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
