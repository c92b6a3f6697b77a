"""A conversation store and a people store on a fresh, migrated database: SQLite, then PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from signing_in import CHEAP_HASHER

from palaver.storage.database import connect, upgrade
from palaver.storage.people import PeopleStore
from palaver.storage.store import ConversationStore


@pytest.fixture
def store(database_url):
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=100, idle_seconds=3600)
    yield store
    store.close()


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self):
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def people(database_url, clock):
    """People on a fresh, migrated database; sessions go idle after an hour; time moves only when the test says."""
    database = connect(database_url)
    upgrade(database)
    yield PeopleStore(database, session_idle_seconds=3600, clock=clock, hasher=CHEAP_HASHER)
    database.dispose()
