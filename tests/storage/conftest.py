"""A conversation store on a fresh, migrated database: SQLite, then PostgreSQL."""

import pytest

from palaver.storage.database import connect, upgrade
from palaver.storage.store import ConversationStore


@pytest.fixture
def store(database_url):
    database = connect(database_url)
    upgrade(database)
    store = ConversationStore(database, max_conversations=100, idle_seconds=3600)
    yield store
    store.close()
