"""The chat call that every surface shares: one turn at a time per conversation, each finished turn stored."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from palaver.backends.admission import BUSY_RETRY_AFTER_SECONDS
from palaver.core.errors import ClientDisconnected, ConversationBusy, InvalidRequest, NotFound
from palaver.core.history import read_from
from palaver.core.json_schemas import Grammar
from palaver.core.parameters import GenerationParams
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, Message, PromptInfo, ReasoningDelta, Reply, Usage, final
from palaver.engine.scheduling.generation import POLL_SECONDS
from palaver.storage.records import StoredConversation
from palaver.storage.store import ConversationStore

if TYPE_CHECKING:
    from palaver.backends import ModelRouter
    from palaver.chat.presets import Presets


@dataclass
class LiveConversation:
    """A conversation as this process serves it now: the turn running in it, and the messages waiting behind."""

    id: str
    active: GenerationRequest | None = None  # the generation running for this conversation, if any
    lease: str | None = None  # the token of the database lease its running turn holds
    # Held for a whole turn, so one user's concurrent messages each see the previous reply.
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: int = 0  # messages waiting for the turn before them to end
    users: int = 0  # requests holding this object; it is forgotten when none is left


@dataclass(frozen=True)
class ChatInput:
    text: str
    conversation_id: str | None
    params: GenerationParams
    preset: str | None = None
    replace_last_turn: bool = False  # regenerate or edit: the new turn takes the last one's place
    model: str | None = None  # the model a new conversation runs on, as the client named it; None: the default
    grammar: Grammar | None = None  # what the reply must follow (params.json_schema's), built and checked already


@dataclass(frozen=True)
class ChatTurn:
    conversation_id: str
    reply: Reply
    user_text: str = ""
    seconds: float | None = None
    model: str | None = None


class Chat:
    """Answer a message within its conversation, one turn at a time, and store each finished turn."""

    def __init__(
        self,
        store: ConversationStore,
        backend: ModelRouter,
        presets: Presets,
        max_waiting: int = 4,
        wait_seconds: float = 120,
        max_history: int = 40,
        max_turns: int = 1000,
    ):
        self.store = store
        self.backend = backend
        self.presets = presets
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.max_history = max_history
        self.max_turns = max_turns
        # Conversations with a request in this process: Stop and a second message must find the running turn.
        self._live: dict[str, LiveConversation] = {}
        self._lock = threading.Lock()
        # Stop pressed in another process, or a delete, reaches the turn running here through its lease.
        store.leases.watch(self._cancel_here)

    def send(
        self,
        chat_input: ChatInput,
        owner: str | None = None,
        *,
        restart_unknown: bool = False,
        client_gone: Callable[[], bool] | None = None,
    ) -> ChatTurn:
        """Reply to chat_input for owner; an unknown conversation is an error unless restart_unknown."""
        conversation_id = self.resolve(chat_input.conversation_id, owner, restart_unknown)
        return final(self.stream(conversation_id, chat_input, owner, client_gone), ChatTurn)

    def resolve(self, conversation_id: str | None, owner: str | None = None, restart_unknown: bool = False) -> str:
        """Return the id to continue: a stored or running conversation's that owner may use, or a new one's."""
        if conversation_id is None:
            return uuid.uuid4().hex
        if self.store.exists(conversation_id, owner):
            return conversation_id
        if restart_unknown:
            return uuid.uuid4().hex
        raise self._not_found(conversation_id)

    def stream(
        self,
        conversation_id: str,
        chat_input: ChatInput,
        owner: str | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> Generator[PromptInfo | str | ReasoningDelta | ChatTurn, None, None]:
        """Yield the PromptInfo, the reply's reasoning and text as they come, then the ChatTurn; store the turn."""
        # The one resolution of the name the client sent: an unknown one is a 404 before the conversation is touched.
        asked = self.backend.resolve(chat_input.model) if chat_input.model else None
        with self._turn(conversation_id, owner, client_gone) as conversation:
            replacing = chat_input.replace_last_turn
            # Read once the turn is ours, so it holds the previous reply; only the turns the prompt can hold.
            stored = self.store.get(conversation_id, owner, partial(self._prompt_turns, replacing=replacing))
            if replacing and stored is None:
                raise InvalidRequest(
                    "'replace_last_turn': the conversation has no turn to replace yet", param="replace_last_turn"
                )
            if stored is not None and not replacing and stored.turns >= self.max_turns:
                raise ConversationBusy(
                    f"this conversation has reached its limit of {self.max_turns} turns; start a new conversation",
                    code="conversation_full",
                    param="conversation_id",
                )
            history = stored.messages if stored else []
            unread = 2 * stored.first_turn if stored else 0  # older messages, which the prompt would leave out too
            model = self._model_of(asked, stored.model if stored else None)
            preset = self.presets.get(chat_input.preset or (stored.preset if stored else None))
            user_turn = Message("user", chat_input.text)
            request = GenerationRequest(
                chat_input.params,
                messages=preset.apply([*history, user_turn]),
                grammar=chat_input.grammar,
                model=model,
                max_history=self.max_history,
                client_gone=client_gone,
            )
            shown, reasoned, finished, started = "", "", False, time.monotonic()

            def store(reply: Reply) -> float:
                seconds = time.monotonic() - started
                replace = chat_input.replace_last_turn
                self.store.add_turn(conversation_id, preset.name, user_turn.content, reply, seconds, replace, model)
                return seconds

            conversation.active = request
            try:
                with closing(self.backend.stream(request)) as items:
                    for item in items:
                        if isinstance(item, (PromptInfo, Reply)) and unread:
                            item = replace(item, truncated_turns=item.truncated_turns + unread)
                        if isinstance(item, Reply):
                            seconds = None
                            # Stopped before any text (or reasoning) was shown: no turn.
                            if item.text or item.reasoning or item.finish_reason != "cancelled":
                                seconds = store(item)
                            finished = True
                            shown_model = self.backend.public_name(model)
                            yield ChatTurn(conversation_id, item, user_turn.content, seconds, shown_model)
                            return
                        if isinstance(item, str):
                            shown += item
                            yield item
                        elif isinstance(item, ReasoningDelta):
                            reasoned += item.text
                            yield item
                        elif isinstance(item, PromptInfo):  # the model is loaded: time the reply from here
                            started = time.monotonic()
                            yield item
            except GeneratorExit:
                # The client went away mid-reply: keep what was sent. A failure keeps nothing, so no turn dangles.
                if (shown or reasoned) and not finished:
                    store(Reply(shown, Usage(0, 0), 0, "cancelled", reasoning=reasoned))
                raise
            finally:
                conversation.active = None

    def _model_of(self, asked: str | None, stored: str | None) -> str:
        """Return the model a turn runs on: the conversation's own once it has one; 400 for a different one."""
        if stored is None:
            return asked or self.backend.default
        # A model no longer configured is a 404 that names the others; one the client named again is known.
        kept = stored if stored == asked else self.backend.resolve(stored)
        if asked is not None and asked != kept:
            raise InvalidRequest(
                f"'model': this conversation runs on '{kept}'; start a new conversation to talk to '{asked}'",
                param="model",
            )
        return kept

    def _prompt_turns(self, turns: int, replacing: bool) -> range:
        """Return the stored turns to read for a new turn's prompt: those before any it replaces that it may keep."""
        kept = turns - 1 if replacing else turns
        return range(read_from(kept, self.max_history), kept)

    @contextmanager
    def _turn(
        self, conversation_id: str, owner: str | None, client_gone: Callable[[], bool] | None
    ) -> Iterator[LiveConversation]:
        """Hold the conversation for one turn, here and in the database, waiting a bounded time for the one before."""
        with self._lock:
            conversation = self._live.setdefault(conversation_id, LiveConversation(conversation_id))
            conversation.users += 1
        token = uuid.uuid4().hex
        try:
            # First in this process, then across processes: a lease in the database that this process renews.
            if not conversation.lock.acquire(blocking=False):
                self._wait_for_turn(conversation, client_gone, lambda: conversation.lock.acquire(timeout=POLL_SECONDS))
            try:
                leases = self.store.leases
                client = CALLER.get().client or None  # whose share of storage a new conversation takes
                if not leases.acquire(conversation_id, token, owner, client):
                    self._wait_for_turn(
                        conversation,
                        client_gone,
                        lambda: self._pause() or leases.acquire(conversation_id, token, owner, client),
                    )
                conversation.lease = token
                try:
                    yield conversation
                finally:
                    conversation.lease = None
                    leases.release(conversation_id, token)
            finally:
                conversation.lock.release()
        finally:
            with self._lock:
                conversation.users -= 1
                if not conversation.users:
                    del self._live[conversation_id]

    @staticmethod
    def _pause() -> None:
        time.sleep(POLL_SECONDS)

    def _wait_for_turn(
        self, conversation: LiveConversation, client_gone: Callable[[], bool] | None, take: Callable[[], bool]
    ) -> None:
        """Call take until it gets the turn, in a bounded line, for a bounded time, while the client is there."""
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
            with self.backend.waiting():  # a wait counts toward PALAVER_MAX_PENDING like a queued request
                deadline = time.monotonic() + self.wait_seconds
                while not take():
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

    def cancel(self, conversation_id: str | None, owner: str | None = None) -> bool:
        """Stop the generation running in owner's conversation, in this process or another; it keeps what was shown."""
        if not conversation_id or not self.store.exists(conversation_id, owner):
            return False
        return self._cancel_here(conversation_id) or self.store.leases.request_cancel(conversation_id)

    def delete(self, conversation_id: str, owner: str | None = None) -> None:
        """Delete owner's conversation for good, stopping its running turn, or raise NotFound."""
        if not self.store.exists(conversation_id, owner):
            raise self._not_found(conversation_id)
        self.cancel(conversation_id, owner)  # its turn ends writing nothing: the row it would add to is gone
        self.store.delete(conversation_id, owner)

    def _cancel_here(self, conversation_id: str, lease: str | None = None) -> bool:
        """Stop the conversation's turn running here: any turn, or only the one holding lease."""
        with self._lock:
            conversation = self._live.get(conversation_id)
            current = conversation is not None and (lease is None or conversation.lease == lease)
            request = conversation.active if conversation and current else None
        if request is not None:
            request.cancel()
        return request is not None

    def rename(self, conversation_id: str, title: str, owner: str | None = None) -> StoredConversation:
        """Retitle owner's stored conversation and return it, or raise NotFound."""
        if not self.store.rename(conversation_id, owner, title):
            raise self._not_found(conversation_id)
        return self.find(conversation_id, owner)

    def find(self, conversation_id: str, owner: str | None = None) -> StoredConversation:
        """Return a stored conversation owner may use, or raise NotFound."""
        stored = self.store.get(conversation_id, owner)
        if stored is None:
            raise self._not_found(conversation_id)
        return stored

    def history(self, conversation_id: str | None, owner: str | None = None) -> list[Message]:
        """Return the messages of a conversation owner may use, or an empty list."""
        stored = self.store.get(conversation_id, owner) if conversation_id else None
        return stored.messages if stored else []

    @staticmethod
    def _not_found(conversation_id: str) -> NotFound:
        return NotFound(f"conversation '{conversation_id}' does not exist or has expired", param="conversation_id")
