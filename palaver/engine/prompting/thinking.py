"""Which models think before they answer, told once at load from their vocabulary, and where a reply starts."""

from __future__ import annotations

from dataclasses import dataclass

from palaver.core.reasoning import CLOSE_TAG, OPEN_TAG

TAIL_TOKENS = 4  # the prompt's last tokens read for an opening tag: the tag, and the newlines after it


@dataclass(frozen=True)
class ThinkTags:
    """A thinking model's think tags, each a token of its vocabulary."""

    open_id: int
    close_id: int
    spelled: dict[int, str]  # the tags that decoding would drop (marked special), written back as text

    @classmethod
    def of(cls, tokenizer) -> ThinkTags | None:
        """Return the tags of a model whose vocabulary holds both as tokens of their own; None for any other."""
        open_id, close_id = single_token(tokenizer, OPEN_TAG), single_token(tokenizer, CLOSE_TAG)
        if open_id is None or close_id is None:
            return None
        spelled = {
            index: tag
            for index, tag in ((open_id, OPEN_TAG), (close_id, CLOSE_TAG))
            if tokenizer.decode([index], skip_special_tokens=True) != tag
        }
        return cls(open_id, close_id, spelled)

    def starts_inside(self, tokenizer, prompt_ids: list[int]) -> bool:
        """Tell whether the prompt ends opening the thinking (as DeepSeek-R1's template does): replies start inside."""
        # Its last token but whitespace: a '<think>' in a message is followed by the template's assistant header.
        for token in reversed(prompt_ids[-TAIL_TOKENS:]):
            if token == self.open_id:
                return True
            if tokenizer.decode([token], skip_special_tokens=False).strip():
                return False
        return False


def single_token(tokenizer, text: str) -> int | None:
    """Return the id of the one token that spells text, or None where text takes several (or an unknown one)."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    return ids[0] if len(ids) == 1 and tokenizer.decode(ids, skip_special_tokens=False) == text else None
