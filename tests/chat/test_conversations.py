"""Conversation memory: bounds, isolation and consistency on failure."""

import threading

import pytest
from helpers import model_held, raising, seed_turns
from timing import wait_until

from commons import Settings
from palaver.chat.conversations import Chat, ChatInput
from palaver.chat.presets import Presets
from palaver.core.errors import ConversationBusy, GenerationFailed, InvalidRequest, NotFound, ServerBusy
from palaver.core.parameters import Sampling
from palaver.storage.database import connect, database_url, upgrade
from palaver.storage.store import ConversationStore


def sqlite_store(path, max_conversations=100, idle_seconds=3600, clock=None):
    """A store on a fresh, migrated SQLite database."""
    database = connect(database_url("", str(path)))
    upgrade(database)
    return ConversationStore(database, max_conversations, idle_seconds, **({"clock": clock} if clock else {}))


@pytest.fixture
def chat(make_router, chat_model, tmp_path):
    """A chat service on the real tiny chat model, storing in SQLite."""
    chat = Chat(sqlite_store(tmp_path), make_router(chat_model), Presets(Settings()))
    yield chat
    chat.store.close()


def chat_input(text, conversation_id=None, **params):
    defaults = Settings(temperature=0.0, max_new_tokens=4).generation_defaults()
    return ChatInput(text, conversation_id, Sampling.parse(params).applied_to(defaults))


def contents(chat, conversation_id):
    return [m.content for m in chat.history(conversation_id)]


def test_only_the_latest_messages_are_sent_but_all_are_stored(make_router, chat_model, tmp_path):
    chat = Chat(sqlite_store(tmp_path / "db"), make_router(chat_model), Presets(Settings()), max_history=2)
    turn = chat.send(chat_input("one"))
    replies = [chat.send(chat_input(text, turn.conversation_id)).reply for text in ("two", "three")]
    assert [reply.truncated_turns for reply in replies] == [0, 2], "the new message and the two before it are sent"
    assert [m.content for m in chat.history(turn.conversation_id)][::2] == ["one", "two", "three"]


def test_a_long_conversation_reads_only_what_its_prompt_keeps_and_says_how_many_it_left_out(
    make_router, chat_model, tmp_path
):
    chat = Chat(sqlite_store(tmp_path / "db"), make_router(chat_model), Presets(Settings()), max_history=8)
    conversation_id = chat.send(chat_input("first")).conversation_id
    seed_turns(chat.store, conversation_id, 29)
    read: list[range] = []
    real_get = chat.store.get
    chat.store.get = lambda *args: read.extend(args[2:] and [args[2](30)]) or real_get(*args)
    reply = chat.send(chat_input("thirty-first", conversation_id)).reply
    assert read == [range(24, 30)], "a block's start, and no more than the prompt may keep"
    assert reply.truncated_turns == 52, "all 60 stored messages but the last 8 were left out, unread ones too"


def test_chat_remembers_and_sends_the_history(chat):
    first = chat.send(chat_input("hello"))
    second = chat.send(chat_input("again", first.conversation_id))
    assert second.conversation_id == first.conversation_id
    assert second.reply.usage.prompt_tokens > first.reply.usage.prompt_tokens + first.reply.usage.completion_tokens
    assert contents(chat, first.conversation_id) == ["hello", first.reply.text, "again", second.reply.text]


def test_unknown_conversation_is_not_found_unless_restarting(chat):
    with pytest.raises(NotFound) as caught:
        chat.send(chat_input("hi", "missing"))
    assert caught.value.param == "conversation_id" and caught.value.status == 404
    assert chat.send(chat_input("hi", "missing"), restart_unknown=True).conversation_id != "missing"


def test_a_failed_generation_leaves_no_dangling_user_turn(chat):
    turn = chat.send(chat_input("hello"))
    chat.backend.loaded().model.family.model.module.forward = raising(RuntimeError("boom"))
    with pytest.raises(GenerationFailed):
        chat.send(chat_input("lost", turn.conversation_id))
    assert contents(chat, turn.conversation_id) == ["hello", turn.reply.text]


def test_a_stopped_stream_keeps_what_the_user_saw(chat):
    conversation_id = chat.resolve(None)
    items = chat.stream(conversation_id, chat_input("tell me a story", max_new_tokens=64, stop=[]))
    assert next(items).truncated_turns == 0  # the PromptInfo comes first
    shown = next(items) + next(items)
    items.close()  # as when the user presses Stop or the browser goes away
    assert contents(chat, conversation_id) == ["tell me a story", shown]
    assert chat.backend.wait_ready(1) and chat.send(chat_input("next", conversation_id)).reply is not None


def test_concurrent_messages_in_one_conversation_take_turns(chat):
    chat.max_waiting = 8
    conversation_id = chat.send(chat_input("start")).conversation_id
    threads = [threading.Thread(target=chat.send, args=(chat_input(f"m{i}", conversation_id),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = chat.history(conversation_id)
    assert [m.role for m in history] == ["user", "assistant"] * 9
    assert sorted(m.content for m in history if m.role == "user") == sorted(["start"] + [f"m{i}" for i in range(8)])


def test_conversations_are_isolated_under_concurrency(chat):
    ids = [chat.send(chat_input(f"user{n}-0")).conversation_id for n in range(8)]

    def talk(n):
        for step in range(1, 3):
            chat.send(chat_input(f"user{n}-{step}", ids[n]))

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, conversation_id in enumerate(ids):
        users = [m.content for m in chat.history(conversation_id) if m.role == "user"]
        assert users == [f"user{n}-0", f"user{n}-1", f"user{n}-2"]


def test_a_conversation_remembers_its_preset(chat):
    turn = chat.send(ChatInput("hi there", None, chat_input("x").params, "text-message-check"))
    assert chat.store.get(turn.conversation_id).preset == "text-message-check"
    with pytest.raises(InvalidRequest) as caught:
        chat.send(ChatInput("hi", None, chat_input("x").params, "no-such-preset"))
    assert caught.value.param == "preset" and "text-message-check" in caught.value.message


def test_failed_and_refused_turns_create_no_conversation(chat):
    kept = chat.send(chat_input("hello")).conversation_id
    chat.store.max_conversations = 2
    for _ in range(5):
        with pytest.raises(InvalidRequest):  # too long for the model's context
            chat.send(chat_input("hello there " * 400))
    chat.backend.loaded().model.family.model.module.forward = raising(RuntimeError("boom"))
    with pytest.raises(GenerationFailed):
        chat.send(chat_input("lost"))
    del chat.backend.loaded().model.family.model.module.forward
    assert chat.store.count() == 1 and chat.history(kept), "a real conversation survives a flood of failures"


def test_a_new_conversation_can_be_stopped_before_it_is_stored(chat):
    conversation_id = chat.resolve(None)
    items = chat.stream(conversation_id, chat_input("tell me a story", max_new_tokens=200, stop=[]))
    next(items)
    assert chat.store.get(conversation_id) is None and chat.cancel(conversation_id)
    turn = [item for item in items][-1]
    assert turn.reply.finish_reason == "cancelled"


def hold_turn(chat, conversation_id):
    """Start a turn in the conversation whose generation is held until released; return its thread."""
    thread = threading.Thread(target=chat.send, args=(chat_input("held", conversation_id),))
    thread.start()
    return thread


def test_messages_waiting_on_one_conversation_are_bounded_and_time_out(chat):
    conversation_id = chat.send(chat_input("start")).conversation_id
    chat.max_waiting, chat.wait_seconds = 2, 1.0
    outcomes = []

    def send():
        try:
            outcomes.append(chat.send(chat_input("queued", conversation_id)))
        except ConversationBusy as exc:
            outcomes.append(exc)

    with model_held(chat.backend.loaded().model.family.model) as (busy, release):
        holder = hold_turn(chat, conversation_id)
        assert busy.wait(10)
        waiters = [threading.Thread(target=send) for _ in range(2)]
        for waiter in waiters:
            waiter.start()
        wait_until(lambda: chat.backend.waiting_count == 2, 30, "two messages waiting for the turn")
        with pytest.raises(ConversationBusy) as caught:  # a third waiter is one too many
            chat.send(chat_input("one too many", conversation_id))
        assert caught.value.status == 409 and caught.value.retry_after and "2 messages waiting" in caught.value.message
        for waiter in waiters:
            waiter.join(10)
        assert [exc.status for exc in outcomes] == [409, 409], "each waited at most wait_seconds"
        release.set()
        holder.join(10)
    assert chat.backend.waiting_count == 0 and chat.backend.pending == 0
    assert chat.send(chat_input("after", conversation_id)).reply is not None


def test_waiting_on_a_conversation_counts_toward_the_pending_bound(chat):
    conversation_id = chat.send(chat_input("start")).conversation_id
    chat.backend.admission.limit = 2
    with model_held(chat.backend.loaded().model.family.model) as (busy, release):
        holder = hold_turn(chat, conversation_id)
        assert busy.wait(10)
        waiter = threading.Thread(target=chat.send, args=(chat_input("waits", conversation_id),))
        waiter.start()
        wait_until(lambda: chat.backend.waiting_count == 1, 30, "a message waiting for the turn")
        with pytest.raises(ServerBusy):  # one generating plus one waiting fill a bound of two
            chat.send(chat_input("elsewhere"))
        release.set()
        holder.join(10)
        waiter.join(10)
    assert [m.content for m in chat.history(conversation_id) if m.role == "user"] == ["start", "held", "waits"]


def test_a_conversation_past_its_history_window_keeps_reusing_its_cached_prompt(make_router, chat_model, tmp_path):
    router = make_router(chat_model, max_new_tokens=1)
    assert router.wait_ready(30)
    engine = router.loaded()
    # A window of 16 turns, from which 4 go at a time (before, one went every turn).
    chat = Chat(sqlite_store(tmp_path / "db"), router, Presets(Settings()), max_history=32)
    conversation_id, reused = None, []
    for turn in range(28):
        before = engine.counts["reused_prompt_tokens"]
        result = chat.send(chat_input(f"turn {turn}: tell me about bees and honey", conversation_id))
        conversation_id = result.conversation_id
        reused.append((engine.counts["reused_prompt_tokens"] - before) / result.reply.usage.prompt_tokens)
    past_the_window = reused[16:]  # one turn in four starts its prompt afresh; sliding by one, every turn did
    assert sum(share > 0.5 for share in past_the_window) >= 8, f"most turns reuse most of their prompt: {reused}"


def test_a_full_conversation_refuses_a_new_turn_but_can_still_redo_its_last(make_router, chat_model, tmp_path):
    chat = Chat(sqlite_store(tmp_path / "db"), make_router(chat_model), Presets(Settings()), max_turns=2)
    first = chat.send(chat_input("one"))
    chat.send(chat_input("two", first.conversation_id))
    with pytest.raises(ConversationBusy) as full:
        chat.send(chat_input("three", first.conversation_id))
    assert full.value.status == 409 and full.value.code == "conversation_full" and "limit of 2 turns" in str(full.value)
    again = ChatInput("two, again", first.conversation_id, chat_input("x").params, replace_last_turn=True)
    chat.send(again)
    assert contents(chat, first.conversation_id)[::2] == ["one", "two, again"]
