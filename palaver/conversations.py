"""Per-user conversation memory and the chat call that every surface shares."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from palaver.engine.admission import BUSY_RETRY_AFTER_SECONDS
from palaver.engine.engine import POLL_SECONDS, GenerationRequest
from palaver.errors import ClientDisconnected, ConversationBusy, NotFound
from palaver.parameters import GenerationParams
from palaver.types import Message, PromptInfo, Reply, final

if TYPE_CHECKING:
    from palaver.engine.engine import Engine


@dataclass
class Conversation:
    id: str
    messages: deque
    last_used: float
    preset: str | None = None
    active: GenerationRequest | None = None  # the generation running for this conversation, if any
    # Held for a whole turn, so one user's concurrent messages each see the previous reply.
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: int = 0  # messages waiting for the turn before them to end


class ConversationStore:
    """Keep conversations in memory, bounded in count (LRU), idle time (TTL) and turns."""

    def __init__(
        self, max_conversations: int, max_turns: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ):
        self.max_conversations = max_conversations
        self.max_turns = max_turns
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._conversations)

    def new(self) -> Conversation:
        """Start an empty conversation, kept only once add() is called after its first turn."""
        return Conversation(uuid.uuid4().hex, deque(maxlen=self.max_turns), self._clock())

    def add(self, conversation: Conversation) -> None:
        """Keep a conversation, evicting the least recently used beyond the cap."""
        with self._lock:
            self._expire()
            conversation.last_used = self._clock()
            self._conversations[conversation.id] = conversation
            self._conversations.move_to_end(conversation.id)
            while len(self._conversations) > self.max_conversations:
                self._conversations.popitem(last=False)

    def get(self, conversation_id: str) -> Conversation | None:
        """Return a live conversation and mark it used, or None."""
        with self._lock:
            self._expire()
            conversation = self._conversations.get(conversation_id)
            if conversation is not None:
                conversation.last_used = self._clock()
                self._conversations.move_to_end(conversation_id)
            return conversation

    def delete(self, conversation_id: str) -> bool:
        """Forget a conversation; return whether it existed."""
        with self._lock:
            return self._conversations.pop(conversation_id, None) is not None

    def _expire(self) -> None:
        deadline = self._clock() - self.ttl_seconds
        while self._conversations:
            oldest = next(iter(self._conversations.values()))
            if oldest.last_used >= deadline:
                return
            self._conversations.popitem(last=False)


@dataclass(frozen=True)
class ChatInput:
    text: str
    conversation_id: str | None
    params: GenerationParams
    preset: str | None = None


@dataclass(frozen=True)
class ChatTurn:
    conversation_id: str
    reply: Reply


class Chat:
    """Answer a message within its conversation and remember both turns."""

    def __init__(self, store: ConversationStore, engine: Engine, max_waiting: int = 4, wait_seconds: float = 120):
        self.store = store
        self.engine = engine
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        # Conversations with a turn running, stored or not yet: Stop and a second message must find them.
        self._running: dict[str, Conversation] = {}
        self._lock = threading.Lock()

    def send(
        self, chat_input: ChatInput, *, restart_unknown: bool = False, client_gone: Callable[[], bool] | None = None
    ) -> ChatTurn:
        """Reply to chat_input; an unknown conversation is an error unless restart_unknown."""
        conversation = self.open(chat_input.conversation_id, restart_unknown)
        return final(self.stream(conversation, chat_input, client_gone), ChatTurn)

    def stream(
        self, conversation: Conversation, chat_input: ChatInput, client_gone: Callable[[], bool] | None = None
    ) -> Generator[PromptInfo | str | ChatTurn, None, None]:
        """Yield the PromptInfo, the reply's text as it comes, then the ChatTurn; remember the turn."""
        preset = self.engine.presets.get(chat_input.preset or conversation.preset)
        with self._turn(conversation, client_gone):
            user_turn = Message("user", chat_input.text)
            request = GenerationRequest(
                chat_input.params, messages=[*conversation.messages, user_turn], preset=preset, client_gone=client_gone
            )
            shown, finished = "", False
            conversation.active = request
            try:
                with closing(self.engine.stream(request)) as items:
                    for item in items:
                        if isinstance(item, Reply):
                            if item.text or item.finish_reason != "cancelled":  # stopped before any text: no turn
                                self._remember(conversation, user_turn, item.text, preset)
                            finished = True
                            yield ChatTurn(conversation.id, item)
                            return
                        if isinstance(item, str):
                            shown += item
                        yield item
            except GeneratorExit:
                # The client went away mid-reply: keep what was sent. A failure keeps nothing, so no turn dangles.
                if shown and not finished:
                    self._remember(conversation, user_turn, shown, preset)
                raise
            finally:
                conversation.active = None

    @contextmanager
    def _turn(self, conversation: Conversation, client_gone: Callable[[], bool] | None) -> Iterator[None]:
        """Hold the conversation for one turn, waiting a bounded time, in a bounded line, for the one before."""
        if not conversation.lock.acquire(blocking=False):
            self._wait_for_turn(conversation, client_gone)
        with self._lock:
            self._running[conversation.id] = conversation
        try:
            yield
        finally:
            with self._lock:  # a message waiting for the next turn registers again once it has the lock
                self._running.pop(conversation.id, None)
            conversation.lock.release()

    def _wait_for_turn(self, conversation: Conversation, client_gone: Callable[[], bool] | None) -> None:
        with self._lock:
            if conversation.waiting >= self.max_waiting:
                raise ConversationBusy(
                    f"this conversation already has {conversation.waiting} messages waiting for "
                    "a reply; wait for them to finish",
                    retry_after=BUSY_RETRY_AFTER_SECONDS,
                    code="conversation_busy",
                    param="conversation_id",
                )
            conversation.waiting += 1
        try:
            with self.engine.waiting():  # a wait counts toward PALAVER_MAX_PENDING like a queued request
                deadline = time.monotonic() + self.wait_seconds
                while not conversation.lock.acquire(timeout=POLL_SECONDS):
                    if client_gone is not None and client_gone():
                        raise ClientDisconnected("the client disconnected")
                    if time.monotonic() > deadline:
                        raise ConversationBusy(
                            f"this conversation was busy with an earlier message for {self.wait_seconds:g} seconds; "
                            "try again when it has finished",
                            retry_after=BUSY_RETRY_AFTER_SECONDS,
                            code="conversation_busy",
                            param="conversation_id",
                        )
        finally:
            with self._lock:
                conversation.waiting -= 1

    def cancel(self, conversation_id: str | None) -> bool:
        """Stop the generation running in a conversation; its stream ends with what was kept."""
        with self._lock:
            conversation = self._running.get(conversation_id) if conversation_id else None
        request = conversation.active if conversation else None
        if request is not None:
            request.cancel()
        return request is not None

    def _remember(self, conversation: Conversation, user_turn: Message, reply: str, preset) -> None:
        conversation.messages.extend([user_turn, Message("assistant", reply)])
        conversation.preset = preset.name
        self.store.add(conversation)  # a conversation exists from its first turn that succeeds

    def open(self, conversation_id: str | None, restart_unknown: bool = False) -> Conversation:
        """Return the conversation with this id (stored, or running its first turn), or a new one."""
        if conversation_id is None:
            return self.store.new()
        conversation = self.store.get(conversation_id)
        if conversation is None:
            with self._lock:
                conversation = self._running.get(conversation_id)
        if conversation is not None:
            return conversation
        if restart_unknown:
            return self.store.new()
        return self.find(conversation_id)

    def find(self, conversation_id: str) -> Conversation:
        """Return a live conversation, or raise NotFound."""
        conversation = self.store.get(conversation_id)
        if conversation is None:
            raise NotFound(f"conversation '{conversation_id}' does not exist or has expired", param="conversation_id")
        return conversation

    def history(self, conversation_id: str | None) -> list[Message]:
        """Return a conversation's messages, or an empty list."""
        conversation = self.store.get(conversation_id) if conversation_id else None
        return list(conversation.messages) if conversation else []
