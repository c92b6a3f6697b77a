"""A tokenizer from tokenizer.json and a chat template, served by `tokenizers` and jinja2 without transformers.

It offers the part of transformers' tokenizer interface that the model families use, with the same results, so a
model served by the native step needs neither transformers nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from palaver.engine.chat_template import ChatTemplate


@dataclass(frozen=True)
class AddedToken:
    content: str
    special: bool


class FileTokenizer:
    """Encode, decode and apply the chat template with `tokenizers` and jinja2."""

    def __init__(self, tokenizer_json: str, config: dict[str, Any]):
        self.backend = Tokenizer.from_str(tokenizer_json)
        # A second copy that reads control-token text in messages as plain text (split_special_tokens=True).
        self.splitting = Tokenizer.from_str(tokenizer_json)
        self.splitting.encode_special_tokens = True
        self.added_tokens_decoder = {
            index: AddedToken(token.content, token.special)
            for index, token in self.backend.get_added_tokens_decoder().items()
        }
        roles = ("bos_token", "eos_token", "unk_token", "pad_token")
        self.special_tokens_map = {role: config[role] for role in roles if config.get(role)}
        self.chat_template: str | None = config.get("chat_template")
        self._template = ChatTemplate(self.chat_template, self.special_tokens_map) if self.chat_template else None

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def _id_of(self, role: str) -> int | None:
        token = self.special_tokens_map.get(role)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id_of("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id_of("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        return self._id_of("bos_token")

    @property
    def all_special_tokens(self) -> list[str]:
        return list(self.special_tokens_map.values())

    def encode(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Return text's token ids."""
        backend = self.splitting if split_special_tokens else self.backend
        return backend.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text: str, split_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, split_special_tokens=split_special_tokens)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Return the text of token ids."""
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_dict: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> Any:
        """Render messages (and tools) with the chat template; tokenized (as a dict, when asked) or as text."""
        if self._template is None:
            raise ValueError("this tokenizer has no chat template")
        text = self._template.render(messages, add_generation_prompt, tools)
        if not tokenize:
            return text
        ids = self.encode(text, add_special_tokens=False)
        return {"input_ids": ids} if return_dict else ids
