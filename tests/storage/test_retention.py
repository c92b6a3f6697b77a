"""Retention: idle conversations go, and past the cap the largest client pools shrink first."""

from datetime import UTC, datetime, timedelta

from stored import store_turn

from palaver.storage.database import connect, upgrade
from palaver.storage.retention import fair_level
from palaver.storage.store import ConversationStore


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
