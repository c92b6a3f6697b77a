"""Conversation memory: bounds, isolation, consistency on failure, and input parsing."""

import threading

import pytest

from commons import Message, Reply, Settings, Usage
from errors import GenerationFailed, InvalidRequest, NotFound
from conversations import Chat, ChatInput, ConversationStore

SETTINGS = Settings(max_message_chars=20)


def echo(messages, params):
    """Reply with the count of messages seen, so tests can check what history reached the model."""
    return Reply(f"saw {len(messages)}", Usage(len(messages), 1), 0, "stop")


def chat_input(text, conversation_id=None):
    return ChatInput(text, conversation_id, SETTINGS.generation_defaults())


def test_store_evicts_the_least_recently_used_conversation():
    store = ConversationStore(max_conversations=2, max_turns=10, ttl_seconds=100)
    first, second = store.create(), store.create()
    store.get(first.id)  # touch first, so second is now the oldest
    third = store.create()
    assert store.get(second.id) is None
    assert store.get(first.id) is first and store.get(third.id) is third and len(store) == 2


def test_store_expires_idle_conversations():
    now = [0.0]
    store = ConversationStore(max_conversations=10, max_turns=10, ttl_seconds=60, clock=lambda: now[0])
    old = store.create()
    now[0] = 30
    recent = store.create()
    now[0] = 61
    assert store.get(old.id) is None and store.get(recent.id) is recent


def test_store_caps_turns_per_conversation():
    chat = Chat(ConversationStore(10, max_turns=4, ttl_seconds=100), echo)
    turn = chat.send(chat_input("one"))
    for text in ("two", "three"):
        chat.send(chat_input(text, turn.conversation_id))
    assert [m.content for m in chat.history(turn.conversation_id)] == ["two", "saw 3", "three", "saw 5"]


def test_chat_remembers_and_sends_the_history():
    chat = Chat(ConversationStore(10, 10, 100), echo)
    first = chat.send(chat_input("hello"))
    second = chat.send(chat_input("again", first.conversation_id))
    assert second.conversation_id == first.conversation_id and second.reply.text == "saw 3"
    assert chat.history(first.conversation_id) == [
        Message("user", "hello"), Message("assistant", "saw 1"), Message("user", "again"),
        Message("assistant", "saw 3")]


def test_unknown_conversation_is_not_found_unless_restarting():
    chat = Chat(ConversationStore(10, 10, 100), echo)
    with pytest.raises(NotFound) as caught:
        chat.send(chat_input("hi", "missing"))
    assert caught.value.param == "conversation_id" and caught.value.status == 404
    assert chat.send(chat_input("hi", "missing"), restart_unknown=True).conversation_id != "missing"


def test_a_failed_generation_leaves_no_dangling_user_turn():
    def fail(messages, params):
        raise GenerationFailed("boom")

    chat = Chat(ConversationStore(10, 10, 100), echo)
    turn = chat.send(chat_input("hello"))
    chat._generate = fail
    with pytest.raises(GenerationFailed):
        chat.send(chat_input("lost", turn.conversation_id))
    assert [m.content for m in chat.history(turn.conversation_id)] == ["hello", "saw 1"]


def test_concurrent_messages_in_one_conversation_take_turns():
    chat = Chat(ConversationStore(10, 100, 100), echo)
    conversation_id = chat.send(chat_input("start")).conversation_id
    threads = [threading.Thread(target=chat.send, args=(chat_input(f"m{i}", conversation_id),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = chat.history(conversation_id)
    assert [m.role for m in history] == ["user", "assistant"] * 9
    assert sorted(m.content for m in history if m.role == "assistant") == sorted(f"saw {n}" for n in range(1, 18, 2))


def test_conversations_are_isolated_under_concurrency():
    chat = Chat(ConversationStore(100, 100, 100), lambda messages, params: Reply(
        "|".join(m.content for m in messages if m.role == "user"), Usage(1, 1), 0, "stop"))
    ids = [chat.send(chat_input(f"user{n}-0")).conversation_id for n in range(8)]

    def talk(n):
        for step in range(1, 4):
            chat.send(chat_input(f"user{n}-{step}", ids[n]))

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, conversation_id in enumerate(ids):
        contents = " ".join(m.content for m in chat.history(conversation_id))
        assert all(f"user{other}-" not in contents for other in range(8) if other != n)
        assert contents.count(f"user{n}-") == 4 + (1 + 2 + 3 + 4)  # four user turns, four growing echoes


@pytest.mark.parametrize("body, param, words", [
    ([], None, "JSON object"), ("hi", None, "JSON object"), ({}, "message", "required"),
    ({"message": 5}, "message", "must be a string"), ({"message": " \n\t "}, "message", "must not be empty"),
    ({"message": "x" * 21}, "message", "at most 20 characters"),
    ({"message": "hi", "conversation_id": 5}, "conversation_id", "string of 1 to 64"),
    ({"message": "hi", "conversation_id": "x" * 65}, "conversation_id", "string of 1 to 64"),
    ({"message": "hi", "max_new_tokens": 0}, "max_new_tokens", "at least 1"),
    ({"message": "hi", "extra": 1}, "extra", "unknown field"),
])
def test_chat_input_rejects_bad_bodies_naming_the_field(body, param, words):
    with pytest.raises(InvalidRequest) as caught:
        ChatInput.parse(body, SETTINGS)
    assert caught.value.param == param and words in caught.value.message


def test_chat_input_strips_the_message_and_applies_parameters():
    parsed = ChatInput.parse({"message": "  hi  ", "temperature": 0, "conversation_id": "abc"}, SETTINGS)
    assert (parsed.text, parsed.conversation_id, parsed.params.greedy) == ("hi", "abc", True)
