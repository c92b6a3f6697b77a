"""A model family's common part: keep a conversation within the context, build rows, generate, and describe limits."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from palaver.core.errors import InvalidRequest
from palaver.core.history import history_starts
from palaver.core.parameters import GenerationParams
from palaver.core.reasoning import ReasoningSplitter
from palaver.core.tool_calls import text_messages
from palaver.core.types import Message, Reply
from palaver.engine.contracts import Batch, ServedModel
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.decoding.rows import Row
from palaver.engine.decoding.streaming import ReplyStream
from palaver.engine.prompting.thinking import ThinkTags

# Private-use characters around a message's index: the template's own text never holds them.
CONTENT_MARK = "\ue000{}\ue001"
CONTENT_MARK_PATTERN = re.compile("\ue000([0-9]+)\ue001")


@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]
    truncated_turns: int
    split_reasoning: bool = False  # a chat with a thinking model: its reply's reasoning is read apart
    starts_thinking: bool = False  # the prompt opened the thinking, so the reply starts inside it


class ModelFamily:
    """Format history, keep it within the context window, and generate with one model."""

    name = "base"
    embeds_only = False  # a sentence encoder's family: it embeds, and generates nothing

    def __init__(self, model: ServedModel, tokenizer, max_context_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = min(model.context_length, max_context_tokens)
        self.stop_token_ids = sorted(stop_token_ids(model, tokenizer))
        self.pad_token_id = pad_token_id(model, tokenizer)
        # Request threads build prompts; a fast tokenizer must not be driven from two threads at once. The lock is
        # held per tokenizer call, never across a template's render, so a slow render delays no other request.
        self._tokenizer_lock = threading.RLock()
        # The ids the tokenizer puts around a text (BOS, EOS, as the file's add_bos_token and add_eos_token say):
        # every prompt format carries them, as llama.cpp and a completion's prompt do.
        self.prompt_prefix, self.prompt_suffix = special_affixes(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        texts = {str(t) for t in tokenizer.all_special_tokens} | {getattr(t, "content", str(t)) for t in added.values()}
        self.control_texts = sorted(texts - {""}, key=len, reverse=True)
        self.think_tags = ThinkTags.of(tokenizer)  # None: the model does not think apart from its answer

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        raise NotImplementedError

    def encode(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, thinking: bool | None = None
    ) -> list[int]:
        """Turn a whole conversation into prompt token ids; text in messages never becomes a control token."""
        # thinking: whether a thinking model thinks first, where its template can say (enable_thinking); None: as
        # the template does by default.
        raise NotImplementedError

    @property
    def renders_tools(self) -> bool:
        """Whether the model's own template writes tools, calls and results, in the format replies are read in."""
        return False

    def encode_conversation(
        self, messages: list[Message], tools: list[dict[str, Any]] | None, thinking: bool | None = None
    ) -> list[int]:
        """Encode messages and the tools the model may call: by its template where it can, else as text."""
        if self.renders_tools:
            return self.with_specials(self.encode([self.defused_calls(m) for m in messages], tools, thinking))
        return self.with_specials(self.encode(text_messages(messages, tools), None, thinking))

    def with_specials(self, ids: list[int]) -> list[int]:
        """Return ids starting with the tokenizer's prefix (BOS) and ending with its suffix, unless they already do."""
        prefix, suffix = self.prompt_prefix, self.prompt_suffix
        if prefix and ids[: len(prefix)] != prefix:
            ids = prefix + ids
        if suffix and ids[-len(suffix) :] != suffix:
            ids = ids + suffix
        return ids

    def defused_calls(self, message: Message) -> Message:
        """Return message with control-token text in its calls' arguments broken up, as in defuse."""
        if not message.tool_calls:
            return message
        calls = tuple(replace(call, arguments=self.defuse(call.arguments)) for call in message.tool_calls)
        return replace(message, tool_calls=calls)

    def holds_control_text(self, text: str) -> bool:
        """Tell whether text contains the written form of a control token, such as '<|im_end|>'."""
        return any(token in text for token in self.control_texts)

    def defuse(self, text: str) -> str:
        """Break up control-token text with a zero-width joiner, for templates that rewrite content."""
        for token in self.control_texts:
            text = text.replace(token, token[:1] + "\u200d" + token[1:])
        return text

    def encode_text(self, text: str) -> list[int]:
        """Tokenize message content so that text such as '<|im_end|>' stays text, not a control token."""
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    def reply_limit(self) -> int:
        """Return the most tokens one reply may have."""
        return self.context_tokens // 2

    def input_limit(self, max_new_tokens: int) -> int:
        """Return the most prompt tokens that leave room for the reply."""
        return self.context_tokens - min(max_new_tokens, self.reply_limit())

    def build_prompt(
        self,
        messages: list[Message],
        max_new_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        most_turns: int | None = None,
        thinking: bool | None = None,
    ) -> Prompt:
        """Encode messages (and tools), dropping the fewest oldest blocks of non-system turns that make them fit."""
        limit = self.input_limit(max_new_tokens)
        system = [m for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        # The one truncation policy (core/history.py): blocks of turns, and at most most_turns of them, if given.
        starts = history_starts(turns, most_turns)
        # Bisect: encodings shrink as turns are dropped, so O(log n) encodes instead of one per turn.
        low, high, best, shortest = 0, len(starts) - 1, None, 0
        while low <= high:
            middle = (low + high) // 2
            input_ids = self.encode_conversation(system + turns[starts[middle] :], tools, thinking)
            if len(input_ids) <= limit:
                best, high = self.chat_prompt(input_ids, starts[middle]), middle - 1
            else:
                low = middle + 1
                shortest = len(input_ids)
        if best is None:
            raise too_long("tools" if tools else "message", shortest, limit)
        return best

    def chat_prompt(self, input_ids: list[int], truncated_turns: int) -> Prompt:
        """Return a chat's prompt, saying whether its reply's reasoning is read apart and starts open."""
        if self.think_tags is None:
            return Prompt(input_ids, truncated_turns)
        with self._tokenizer_lock:
            inside = self.think_tags.starts_inside(self.tokenizer, input_ids)
        return Prompt(input_ids, truncated_turns, split_reasoning=True, starts_thinking=inside)

    def text_prompt(self, text: str, max_new_tokens: int) -> Prompt:
        """Encode a raw completion prompt, which is never truncated and may hold control tokens."""
        with self._tokenizer_lock:
            input_ids = list(self.tokenizer(text)["input_ids"])
        limit = self.input_limit(max_new_tokens)
        if len(input_ids) > limit:
            raise too_long("prompt", len(input_ids), limit)
        return Prompt(input_ids, 0)

    def embedding_ids(self, text: str) -> list[int]:
        """Tokenize a text to embed as a raw prompt is, with the tokenizer's own special tokens (BOS), whole."""
        with self._tokenizer_lock:
            return list(self.tokenizer(text)["input_ids"])

    def cut_to(self, ids: list[int], limit: int) -> list[int]:
        """Cut an input to embed to limit tokens, as a request that truncates asks: its first ones."""
        return ids[:limit]

    def start_batch(self, prefix_cache: PrefixCache | None = None) -> Batch:
        """Start an empty batch that this family's requests can join."""
        return self.model.new_batch(prefix_cache)

    def new_row(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancelled: threading.Event,
        on_text: Callable[[str], None] | None = None,
        strip_leading: bool = True,
        on_reasoning: Callable[[str], None] | None = None,
    ) -> Row:
        """Make a batch row for one request, streaming its text to on_text (and its reasoning to on_reasoning)."""
        tags = self.think_tags if prompt.split_reasoning else None
        splitter = ReasoningSplitter(inside=prompt.starts_thinking) if tags is not None else None
        spelled = tags.spelled if tags is not None else None
        stream = ReplyStream(
            self.tokenizer, self.stop_token_ids, params.stop, on_text, strip_leading, splitter, on_reasoning, spelled
        )
        row = Row(
            prompt.input_ids,
            prompt.truncated_turns,
            params,
            min(params.max_new_tokens, self.reply_limit()),
            stream,
            cancelled,
        )
        row.think_open_id = tags.open_id if tags is not None else None
        return row

    def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        cancelled: threading.Event,
        on_text: Callable[[str], None] | None = None,
        strip_leading: bool = True,
    ) -> Reply:
        """Generate one reply on its own: a batch of one, through the same code as any batch."""
        batch = self.start_batch()
        row = self.new_row(prompt, params, cancelled, on_text, strip_leading)
        batch.add(row)
        while batch.rows:
            batch.step()
            batch.remove_done()
        if row.error is not None:
            raise row.error
        return row.reply()

    def describe(self) -> dict:
        """Describe the family and its limits for clients."""
        return {
            "family": self.name,
            "context_tokens": self.context_tokens,
            "max_input_tokens": self.input_limit(1),
            "max_reply_tokens": self.reply_limit(),
        }


def too_long(field: str, tokens: int, limit: int) -> InvalidRequest:
    """Describe an input that the model's context cannot hold."""
    return InvalidRequest(
        f"'{field}' is too long for this model: {tokens} tokens, and it accepts at most {limit} input tokens",
        param=field,
        code="context_length_exceeded",
    )


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Return the ids the tokenizer adds before and after a text when asked for its special tokens."""
    plain = list(tokenizer.encode("a", add_special_tokens=False))
    full = list(tokenizer.encode("a"))
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def stop_token_ids(model: ServedModel, tokenizer) -> set[int]:
    """Collect every end-of-sequence id the tokenizer and the model declare."""
    ids = set(model.end_of_turn_ids)
    eos = tokenizer.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def pad_token_id(model: ServedModel, tokenizer) -> int:
    """Return the padding id: the tokenizer's, else the model's, else end-of-sequence."""
    for value in (tokenizer.pad_token_id, model.pad_id, tokenizer.eos_token_id):
        if value is not None:
            return value[0] if isinstance(value, list) else value
    return 0


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: its family, how long it took to load, and how its weights are held."""

    name: str
    family: ModelFamily
    load_seconds: float
    weights: str = "float32"  # or "gguf-blocks": how the linear layers hold their weights
    loaded_at: float = field(default_factory=time.time)
    engine: str = "transformers"  # or "native": what runs each step
    kv_cache_bytes: int | None = None  # the native step's KV budget; the transformers path has none
    fingerprint: str | None = None  # the weights' bytes and the arithmetic over them, as system_fingerprint
    gguf: dict | None = None  # a GGUF file's architecture, tensor types, and bytes served as stored and as float32

    def release(self) -> None:
        """Let go of what the model holds outside Python's reach (the native step's weights and KV pages)."""
        self.family.model.close()
