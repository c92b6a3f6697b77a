"""The kinds of model family: how each turns a conversation into tokens (a chat template, ChatML for a model with
none, EOS-joined turns, or Blenderbot's encoder input), and how a model's kind is told from its config and
tokenizer."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from palaver.core.errors import InvalidRequest, ModelRefused
from palaver.core.tool_calls import template_messages
from palaver.core.types import Message
from palaver.engine.contracts import ServedModel
from palaver.engine.prompting import template_sandbox
from palaver.engine.prompting.encoders import SentenceEncoderFamily
from palaver.engine.prompting.model_family import CONTENT_MARK, CONTENT_MARK_PATTERN, ModelFamily
from palaver.engine.prompting.template_sandbox import TemplateBroke, TemplateFailed

# llama.cpp's template for a model file that carries none (common/chat.cpp, CHATML_TEMPLATE_SRC).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)
# Conversations rendered once at load: a template that breaks a bound on them is refused before it serves anyone.
SAMPLES = (
    [
        Message("system", "You are a helpful assistant"),
        Message("user", "Hello"),
        Message("assistant", "Hi there"),
        Message("user", "How are you?"),
    ],
    [Message("user", "Hello")],
)


class ChatTemplateFamily(ModelFamily):
    """Causal models whose tokenizer carries a chat template (SmolLM2, TinyLlama, Qwen...)."""

    name = "chat-template"

    def __init__(self, model: ServedModel, tokenizer, max_context_tokens: int):
        super().__init__(model, tokenizer, max_context_tokens)
        self.check_template()

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return not model.is_encoder_decoder and bool(getattr(tokenizer, "chat_template", None))

    def template_source(self, tools: list[dict[str, Any]] | None) -> str:
        """Return the template's text; of named templates, the tool-use one when there are tools, as transformers."""
        template = self.tokenizer.chat_template
        if isinstance(template, dict):
            return template["tool_use"] if tools and "tool_use" in template else template["default"]
        return template

    def check_template(self) -> None:
        """Render sample conversations once, refusing a template that does not compile or breaks a bound."""
        for sample in SAMPLES:
            try:
                self._render(sample, None)
                return
            except TemplateBroke as error:
                raise ModelRefused(
                    f"the model's chat template is refused: rendering a sample conversation, {error}"
                ) from None
            except TemplateFailed as error:
                if error.syntax:
                    raise ModelRefused(f"the model's chat template is refused: {error}") from None
        # The template raised its own errors on both samples (a role it refuses, say): requests then get them.

    @functools.cached_property
    def renders_tools(self) -> bool:
        template = getattr(self.tokenizer, "chat_template", None)
        return isinstance(template, str) and "<tool_call>" in template and "tools" in template

    def encode(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, thinking: bool | None = None
    ) -> list[int]:
        try:
            return self._encode(messages, tools, thinking)
        except TemplateBroke as error:
            raise InvalidRequest(
                f"the model's chat template broke a bound rendering these messages: {error}",
                param="messages",
                code="chat_template_bound",
            ) from None
        except TemplateFailed as error:
            raise InvalidRequest(
                f"the model's chat template refused these messages: {error}", param="messages", code="chat_template"
            ) from None

    def _encode(self, messages: list[Message], tools: list[dict[str, Any]] | None, thinking: bool | None) -> list[int]:
        if not any(self.holds_control_text(m.content) for m in messages):
            return self._encode_with_template(messages, tools, thinking)  # the common case, as the template says
        # Render the template around placeholders, then tokenize its own text (control tokens and all)
        # apart from the messages' text, which is tokenized with control tokens split into plain text.
        marks = [replace(m, content=CONTENT_MARK.format(index)) for index, m in enumerate(messages)]
        pieces = CONTENT_MARK_PATTERN.split(self._render(marks, tools, thinking))
        if pieces[1::2] != [str(index) for index in range(len(messages))]:  # the template rewrote a message
            defused = [replace(m, content=self.defuse(m.content)) for m in messages]
            return self._encode_with_template(defused, tools, thinking)
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids += self.encode_text(messages[int(piece)].content)
            elif piece:
                ids += self.encode_template_text(piece)
        return ids

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None, thinking: bool | None = None) -> str:
        # In a bounded child process, with the arguments transformers' apply_chat_template gives a template, and
        # enable_thinking as llama-server and vLLM pass it (a template that does not read it renders the same).
        special_tokens = dict(getattr(self.tokenizer, "special_tokens_map", None) or {})
        variables = {} if thinking is None else {"enable_thinking": thinking}
        return template_sandbox.render(
            self.template_source(tools), special_tokens, template_messages(messages), True, tools, variables
        )

    def encode_template_text(self, text: str) -> list[int]:
        """Tokenize the template's own text, control tokens and all, as apply_chat_template does."""
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode_with_template(
        self, messages: list[Message], tools: list[dict[str, Any]] | None, thinking: bool | None
    ) -> list[int]:
        return self.encode_template_text(self._render(messages, tools, thinking))


class ChatMLFamily(ChatTemplateFamily):
    """Causal models with no chat template (but DialoGPT's GPT-2): ChatML, as llama.cpp falls back to."""

    name = "chatml"

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return not model.is_encoder_decoder and model.model_type != "gpt2"

    @property
    def renders_tools(self) -> bool:
        return False  # ChatML has no tool format: tools go in as text, in the generic format

    def template_source(self, tools: list[dict[str, Any]] | None) -> str:
        return CHATML_TEMPLATE


class EosJoinedFamily(ModelFamily):
    """GPT-2 models without a template, such as DialoGPT: turns joined by the EOS token."""

    name = "eos-joined"

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return not model.is_encoder_decoder

    def encode(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, thinking: bool | None = None
    ) -> list[int]:
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
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return model.is_encoder_decoder

    def reply_limit(self) -> int:
        # The decoder has its own position table; the first position holds the start token.
        return self.model.context_length - 1

    def input_limit(self, max_new_tokens: int) -> int:
        return self.context_tokens

    def format_turn(self, message: Message) -> str:
        # Blenderbot was trained with a leading space on user turns.
        return " " + message.content if message.role == "user" else message.content

    def encode(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, thinking: bool | None = None
    ) -> list[int]:
        text = self.turn_separator.join(self.format_turn(m) for m in messages)
        with self._tokenizer_lock:
            return list(self.tokenizer(text, split_special_tokens=True)["input_ids"])


class BlenderbotSmallFamily(BlenderbotFamily):
    """BlenderbotSmall, which ParlAI trained with newline-separated turns."""

    name = "blenderbot-small"
    turn_separator = "\n"

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return model.model_type == "blenderbot-small"

    def format_turn(self, message: Message) -> str:
        return message.content


FAMILIES: tuple[type[ModelFamily], ...] = (
    SentenceEncoderFamily,
    BlenderbotSmallFamily,
    BlenderbotFamily,
    ChatTemplateFamily,
    ChatMLFamily,
    EosJoinedFamily,
)


def family_for(model: ServedModel, tokenizer) -> type[ModelFamily]:
    """Pick the family from what the model and its tokenizer say, never from the model's name."""
    return next(family for family in FAMILIES if family.matches(model, tokenizer))
