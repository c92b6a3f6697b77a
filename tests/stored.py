"""Turns written to a store as the chat service writes them, for the storage tests."""

from palaver.core.types import Reply, Usage


def reply(text, finish_reason="stop"):
    return Reply(text, Usage(5, 2), 0, finish_reason)


def store_turn(store, conversation_id, user_text, answer="hi", preset=None, owner=None, client=None):
    """Store a turn as Chat does: under the conversation's lease."""
    assert store.leases.acquire(conversation_id, "turn", owner, client)
    try:
        return store.add_turn(conversation_id, preset, user_text, reply(answer) if isinstance(answer, str) else answer)
    finally:
        store.leases.release(conversation_id, "turn")
