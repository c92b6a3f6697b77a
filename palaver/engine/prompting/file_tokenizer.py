"""A tokenizer from tokenizer.json and a chat template, served by `tokenizers` and jinja2 without transformers.

It offers the part of transformers' tokenizer interface that the model families use, with the same results, so a
model served by the native step needs neither transformers nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, processors

from palaver.engine.prompting import template_sandbox


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
        if "add_bos_token" in config or "add_eos_token" in config:
            self.backend.post_processor = self.specials_processor(config)

    def specials_processor(self, config: dict[str, Any]) -> processors.TemplateProcessing:
        """Return the step that puts BOS before a text and EOS after it, as the config's add_*_token flags say."""
        around: dict[str, list[str]] = {"bos_token": [], "eos_token": []}
        for role, flag in (("bos_token", "add_bos_token"), ("eos_token", "add_eos_token")):
            token = self.special_tokens_map.get(role)
            if config.get(flag) and token is not None and self.backend.token_to_id(token) is not None:
                around[role] = [token]
        single = [*around["bos_token"], "$A", *around["eos_token"]]
        pair = [*single, *around["bos_token"], "$B:1", *around["eos_token"]]
        named = {token for tokens in around.values() for token in tokens}
        return processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(token, self.backend.token_to_id(token)) for token in named]
        )

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
        """Render messages (and tools) with the chat template, in a bounded child; tokenized or as text."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text = template_sandbox.render(
            self.chat_template, self.special_tokens_map, messages, add_generation_prompt, tools
        )
        if not tokenize:
            return text
        ids = self.encode(text, add_special_tokens=False)
        return {"input_ids": ids} if return_dict else ids
