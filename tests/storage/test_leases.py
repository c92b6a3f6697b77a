"""Turn leases: one process at a time runs a conversation's turn, and Stop and delete reach it from another."""

import threading
from datetime import UTC, datetime, timedelta

from stored import reply, store_turn
from timing import budget

from palaver.storage.database import connect, upgrade
from palaver.storage.leases import HEARTBEAT_SECONDS, LEASE_SECONDS
from palaver.storage.store import ConversationStore


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
    assert store.leases.request_cancel("c") and stopped.wait(budget(5))
    store.leases.release("c", "token")


def test_a_holder_is_told_to_stop_when_its_conversation_is_deleted(store):
    stopped = threading.Event()
    store.leases.watch(lambda conversation_id, token: (conversation_id, token) == ("c", "token") and stopped.set())
    store_turn(store, "c", "hello")
    assert store.leases.acquire("c", "token")
    assert not stopped.wait(3 * HEARTBEAT_SECONDS)  # renewed, not stopped, while its row is there
    assert store.delete("c") and stopped.wait(budget(5))
    store.leases.release("c", "token")
