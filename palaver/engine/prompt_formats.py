"""The kinds of model family: how each turns a conversation into tokens (a chat template, EOS-joined turns, or
Blenderbot's encoder input), and how a model's kind is told from its config and tokenizer."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from palaver.core.tool_calls import template_messages
from palaver.core.types import Message
from palaver.engine.families import CONTENT_MARK, CONTENT_MARK_PATTERN, ModelFamily, context_length
from palaver.engine.prefix_cache import PrefixCache


class ChatTemplateFamily(ModelFamily):
    """Causal models whose tokenizer carries a chat template (SmolLM2, TinyLlama, Qwen...)."""

    name = "chat-template"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return not config.is_encoder_decoder and bool(getattr(tokenizer, "chat_template", None))

    @functools.cached_property
    def renders_tools(self) -> bool:
        template = getattr(self.tokenizer, "chat_template", None)
        return isinstance(template, str) and "<tool_call>" in template and "tools" in template

    def encode(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        if not any(self.holds_control_text(m.content) for m in messages):
            return self._encode_with_template(messages, tools)  # the common case, tokenized as the template says
        # Render the template around placeholders, then tokenize its own text (control tokens and all)
        # apart from the messages' text, which is tokenized with control tokens split into plain text.
        marks = [replace(m, content=CONTENT_MARK.format(index)) for index, m in enumerate(messages)]
        pieces = CONTENT_MARK_PATTERN.split(self._render(marks, tools))
        if pieces[1::2] != [str(index) for index in range(len(messages))]:  # the template rewrote a message
            return self._encode_with_template([replace(m, content=self.defuse(m.content)) for m in messages], tools)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids += self.encode_text(messages[int(piece)].content)
            elif piece:
                ids += self.tokenizer.encode(piece, add_special_tokens=False)
        return ids

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        return self.tokenizer.apply_chat_template(
            template_messages(messages), tools=tools, add_generation_prompt=True, tokenize=False
        )

    def _encode_with_template(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            template_messages(messages), tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])


class EosJoinedFamily(ModelFamily):
    """Causal models without a template, such as DialoGPT: turns joined by the EOS token."""

    name = "eos-joined"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return not config.is_encoder_decoder

    def encode(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        ids: list[int] = []
        for message in messages:
            ids += self.encode_text(message.content)
            ids.append(self.tokenizer.eos_token_id)
        return ids


class BlenderbotFamily(ModelFamily):
    """Encoder-decoder chat models such as Blenderbot: history is the encoder's input."""

    name = "blenderbot"
    turn_separator = "  "

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return bool(config.is_encoder_decoder)

    def reply_limit(self) -> int:
        # The decoder has its own position table; the first position holds the start token.
        return context_length(self.model.config) - 1

    def input_limit(self, max_new_tokens: int) -> int:
        return self.context_tokens

    def format_turn(self, message: Message) -> str:
        # Blenderbot was trained with a leading space on user turns.
        return " " + message.content if message.role == "user" else message.content

    def encode(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        text = self.turn_separator.join(self.format_turn(m) for m in messages)
        return list(self.tokenizer(text, split_special_tokens=True)["input_ids"])

    def start_batch(self, prefix_cache: PrefixCache | None = None) -> Any:
        from palaver.engine.batching import Seq2SeqBatch

        start = self.model.generation_config.decoder_start_token_id
        if start is None:
            start = self.model.config.decoder_start_token_id
        return Seq2SeqBatch(self.model, start, self.pad_token_id)


class BlenderbotSmallFamily(BlenderbotFamily):
    """BlenderbotSmall, which ParlAI trained with newline-separated turns."""

    name = "blenderbot-small"
    turn_separator = "\n"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return config.model_type == "blenderbot-small"

    def format_turn(self, message: Message) -> str:
        return message.content


FAMILIES: tuple[type[ModelFamily], ...] = (BlenderbotSmallFamily, BlenderbotFamily, ChatTemplateFamily, EosJoinedFamily)


def family_for(config, tokenizer) -> type[ModelFamily]:
    """Pick the family from the model's config and tokenizer, never from its name."""
    return next(family for family in FAMILIES if family.matches(config, tokenizer))
