"""Model families: how each kind of model turns a conversation into a prompt and back into a reply."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from commons import Message, Reply, Usage
from parameters import GenerationParams
from errors import InvalidRequest
from streaming import ReplyStream


@dataclass(frozen=True)
class Prompt:
    input_ids: list[int]
    truncated_turns: int


class StopWhen(StoppingCriteria):
    """Stop generating as soon as a condition holds: a cancel flag, or a stop sequence seen."""

    def __init__(self, condition: Callable[[], bool]):
        self.condition = condition

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.condition(), dtype=torch.bool)


class ModelFamily:
    """Format history, keep it within the context window, and generate with one model."""

    name = "base"

    def __init__(self, model, tokenizer, max_context_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = min(context_length(model.config), max_context_tokens)
        self.stop_token_ids = sorted(stop_token_ids(model, tokenizer))
        self.pad_token_id = pad_token_id(model, tokenizer)

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        raise NotImplementedError

    def encode(self, messages: list[Message]) -> list[int]:
        """Turn a whole conversation into prompt token ids."""
        raise NotImplementedError

    def reply_limit(self) -> int:
        """Return the most tokens one reply may have."""
        return self.context_tokens // 2

    def input_limit(self, max_new_tokens: int) -> int:
        """Return the most prompt tokens that leave room for the reply."""
        return self.context_tokens - min(max_new_tokens, self.reply_limit())

    def build_prompt(self, messages: list[Message], max_new_tokens: int) -> Prompt:
        """Encode messages, dropping the oldest non-system turns until the prompt fits."""
        limit = self.input_limit(max_new_tokens)
        system = [m for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        dropped = 0
        while True:
            input_ids = self.encode(system + turns[dropped:])
            if len(input_ids) <= limit:
                return Prompt(input_ids, dropped)
            if dropped >= len(turns) - 1:
                raise too_long("message", len(input_ids), limit)
            dropped += 1
            # Start the kept history on a user turn, as chat formats expect.
            while dropped < len(turns) - 1 and turns[dropped].role != "user":
                dropped += 1

    def text_prompt(self, text: str, max_new_tokens: int) -> Prompt:
        """Encode a raw completion prompt, which is never truncated."""
        input_ids = list(self.tokenizer(text)["input_ids"])
        limit = self.input_limit(max_new_tokens)
        if len(input_ids) > limit:
            raise too_long("prompt", len(input_ids), limit)
        return Prompt(input_ids, 0)

    def generation_config(self, params: GenerationParams, max_new_tokens: int) -> GenerationConfig:
        """Build a fresh generation config, so the model's own sampling defaults never leak in."""
        options = dict(max_new_tokens=max_new_tokens, eos_token_id=self.stop_token_ids,
                       pad_token_id=self.pad_token_id, repetition_penalty=params.repetition_penalty)
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        if start is not None:
            options["decoder_start_token_id"] = start
        if params.greedy:
            return GenerationConfig(do_sample=False, **options)
        return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                top_k=params.top_k, **options)

    def generate(self, prompt: Prompt, params: GenerationParams, cancelled: threading.Event,
                 on_text: Callable[[str], None] | None = None, strip_leading: bool = True) -> Reply:
        """Generate one reply to a prompt, handing text to on_text as it is decoded."""
        max_new_tokens = min(params.max_new_tokens, self.reply_limit())
        stream = ReplyStream(self.tokenizer, self.stop_token_ids, params.stop, on_text, strip_leading)
        input_ids = torch.tensor([prompt.input_ids])
        if params.seed is not None and not params.greedy:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=stream,
                generation_config=self.generation_config(params, max_new_tokens),
                stopping_criteria=StoppingCriteriaList([StopWhen(lambda: cancelled.is_set() or stream.stopped)]))
        new_tokens = self.new_tokens(output[0].tolist(), len(prompt.input_ids))
        return self.finish(new_tokens, prompt, stream, cancelled.is_set())

    def new_tokens(self, sequence: list[int], prompt_length: int) -> list[int]:
        """Return the generated part of an output sequence."""
        return sequence[prompt_length:]

    def finish(self, new_tokens: list[int], prompt: Prompt, stream: ReplyStream, cancelled: bool) -> Reply:
        """Count the reply's tokens up to its first stop token and say how it ended."""
        stops = set(self.stop_token_ids)
        end = next((i for i, token in enumerate(new_tokens) if token in stops), None)
        reason = "cancelled" if cancelled else "stop" if stream.stopped else "length"
        completion_tokens = len(new_tokens) if end is None else end + 1
        return Reply(stream.text, Usage(len(prompt.input_ids), completion_tokens), prompt.truncated_turns, reason)

    def describe(self) -> dict:
        """Describe the family and its limits for clients."""
        return {"family": self.name, "context_tokens": self.context_tokens,
                "max_input_tokens": self.input_limit(1), "max_reply_tokens": self.reply_limit()}


class ChatTemplateFamily(ModelFamily):
    """Causal models whose tokenizer carries a chat template (SmolLM2, TinyLlama, Qwen...)."""

    name = "chat-template"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return not config.is_encoder_decoder and bool(getattr(tokenizer, "chat_template", None))

    def encode(self, messages: list[Message]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])


class EosJoinedFamily(ModelFamily):
    """Causal models without a template, such as DialoGPT: turns joined by the EOS token."""

    name = "eos-joined"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return not config.is_encoder_decoder

    def encode(self, messages: list[Message]) -> list[int]:
        ids: list[int] = []
        for message in messages:
            ids += self.tokenizer.encode(message.content, add_special_tokens=False)
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

    def encode(self, messages: list[Message]) -> list[int]:
        text = self.turn_separator.join(self.format_turn(m) for m in messages)
        return list(self.tokenizer(text)["input_ids"])

    def new_tokens(self, sequence: list[int], prompt_length: int) -> list[int]:
        return sequence[1:]  # drop the decoder start token


class BlenderbotSmallFamily(BlenderbotFamily):
    """BlenderbotSmall, which ParlAI trained with newline-separated turns."""

    name = "blenderbot-small"
    turn_separator = "\n"

    @classmethod
    def matches(cls, config, tokenizer) -> bool:
        return config.model_type == "blenderbot-small"

    def format_turn(self, message: Message) -> str:
        return message.content


FAMILIES: tuple[type[ModelFamily], ...] = (
    BlenderbotSmallFamily, BlenderbotFamily, ChatTemplateFamily, EosJoinedFamily)


def too_long(field: str, tokens: int, limit: int) -> InvalidRequest:
    """Describe an input that the model's context cannot hold."""
    return InvalidRequest(f"'{field}' is too long for this model: {tokens} tokens, and it accepts at most "
                          f"{limit} input tokens", param=field, code="context_length_exceeded")


def family_for(config, tokenizer) -> type[ModelFamily]:
    """Pick the family from the model's config and tokenizer, never from its name."""
    return next(family for family in FAMILIES if family.matches(config, tokenizer))


def context_length(config) -> int:
    """Return the model's context length from its config."""
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attribute, None)
        if value:
            return int(value)
    return 1024


def stop_token_ids(model, tokenizer) -> set[int]:
    """Collect every end-of-sequence id the tokenizer and generation config declare."""
    ids = set()
    for value in (tokenizer.eos_token_id, model.generation_config.eos_token_id):
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    return ids


def pad_token_id(model, tokenizer) -> int:
    """Return the padding id, falling back to end-of-sequence."""
    for value in (tokenizer.pad_token_id, model.generation_config.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value[0] if isinstance(value, list) else value
    return 0
