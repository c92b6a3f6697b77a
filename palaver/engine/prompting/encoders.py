"""Sentence encoders (BERT, XLM-RoBERTa, MPNet, NomicBert...): told from their files without loading them, pooled
as sentence-transformers' files say (modules.json, 1_Pooling/config.json), and served by a family that embeds and
generates nothing."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from palaver.core.errors import InvalidRequest, ModelRefused
from palaver.core.types import Message
from palaver.engine.contracts import ServedModel
from palaver.engine.prompting.model_family import ModelFamily

# transformers' encoder types: served as sentence encoders even without sentence-transformers' files, pooled by
# their mean, as sentence-transformers pools a plain transformers model.
ENCODER_TYPES = frozenset(
    {"bert", "camembert", "distilbert", "modernbert", "mpnet", "nomic_bert", "roberta", "xlm-roberta"}
)
# sentence-transformers' pooling modes (pooling_mode_<mode> in 1_Pooling/config.json), in the order it joins the
# vectors of several.
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
MODULE_PACKAGE = "sentence_transformers.models."
SERVED_MODULES = {"Transformer", "Pooling", "Normalize"}  # Palaver's vectors are unit-length with or without it


@dataclass(frozen=True)
class SentenceLayout:
    """How a sentence encoder turns its last hidden states into one vector, as its files say."""

    pooling: tuple[str, ...] = ("mean_tokens",)  # of POOLING_MODES, joined in that order
    max_seq_length: int | None = None  # sentence-transformers' bound on a text's tokens, within the positions
    encoder_path: str = ""  # the transformers model's folder within the model's (older layouts: 0_BERT)


def embeds_only(weights: str) -> bool:
    """Tell whether a model directory holds a sentence encoder, from its files alone: nothing is loaded."""
    path = Path(weights) if weights else None
    if path is None or not path.is_dir():
        return False
    if (path / "modules.json").is_file():
        return True
    config = path / "config.json"
    try:
        return model_type(str(config), config.stat().st_mtime_ns) in ENCODER_TYPES
    except (OSError, ValueError):  # a missing or broken config is the load's to report
        return False


@functools.lru_cache(maxsize=64)
def model_type(config: str, modified_ns: int) -> str:
    """Read a version of a config.json (its path and time) for its model_type."""
    return str(read_json(Path(config), dict).get("model_type", ""))


def sentence_layout(directory: Path) -> SentenceLayout | None:
    """Read how a model directory's sentence encoder pools; None for a model that generates.

    With no modules.json it pools by its mean, as sentence-transformers pools a plain transformers model. A module
    besides the encoder, its pooling and a normalisation (a Dense layer, say) is refused, as is lowercasing.
    """
    if not embeds_only(str(directory)):
        return None
    layout = SentenceLayout()
    modules = directory / "modules.json"
    for module in read_json(modules, list) if modules.is_file() else []:
        kind, path = (str(module.get(key, "")) if isinstance(module, dict) else "" for key in ("type", "path"))
        served = kind.removeprefix(MODULE_PACKAGE)
        if not kind.startswith(MODULE_PACKAGE) or served not in SERVED_MODULES:
            raise ModelRefused(
                f"modules.json: the module {kind or '(no type)'} at '{path}' is not served: Palaver pools the "
                "encoder's states and normalises them, and applies no other layer"
            )
        if served == "Transformer":
            layout = replace(layout, encoder_path=path)
        elif served == "Pooling":
            layout = replace(layout, pooling=pooling_modes(directory / path / "config.json"))
    return replace(layout, max_seq_length=max_seq_length(directory / layout.encoder_path))


def pooling_modes(config_file: Path) -> tuple[str, ...]:
    """Return the pooling modes a Pooling module's config turns on, in POOLING_MODES' order; refuse others."""
    config = read_json(config_file, dict) if config_file.is_file() else {"pooling_mode_mean_tokens": True}
    asked = {key.removeprefix("pooling_mode_") for key, on in config.items() if key.startswith("pooling_mode_") and on}
    unknown = sorted(asked - set(POOLING_MODES))
    if unknown or not asked:
        raise ModelRefused(
            f"{config_file}: pooling by {unknown or 'nothing'} is not served; Palaver pools by "
            + ", ".join(POOLING_MODES)
        )
    return tuple(mode for mode in POOLING_MODES if mode in asked)


def max_seq_length(encoder_dir: Path) -> int | None:
    """Return the Transformer module's bound on a text's tokens (sentence_bert_config.json), refusing lowercasing."""
    file = encoder_dir / "sentence_bert_config.json"
    config = read_json(file, dict) if file.is_file() else {}
    if config.get("do_lower_case"):  # sentence-transformers lowercases such a model's texts itself; Palaver does not
        raise ModelRefused(f"{file}: do_lower_case is not served: Palaver tokenizes texts as the tokenizer does")
    length = config.get("max_seq_length")
    return length if isinstance(length, int) and length > 0 else None


def read_json(path: Path, kind: type) -> Any:
    """Read a JSON file holding a kind (dict or list), refusing one that does not parse or holds another."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ModelRefused(f"{path} is not JSON: {error}") from None
    if not isinstance(value, kind):
        raise ModelRefused(f"{path} holds no JSON {'object' if kind is dict else 'array'}")
    return value


class SentenceEncoderFamily(ModelFamily):
    """Sentence encoders: each text becomes one vector, pooled as the model's files say; they generate nothing."""

    name = "sentence-encoder"
    embeds_only = True

    @classmethod
    def matches(cls, model: ServedModel, tokenizer) -> bool:
        return model.embeds_only

    def encode(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, thinking: bool | None = None
    ) -> list[int]:
        raise InvalidRequest("this model only embeds: it has no chat format", param="messages")

    def reply_limit(self) -> int:
        return 0

    def input_limit(self, max_new_tokens: int) -> int:
        return self.context_tokens

    def cut_to(self, ids: list[int], limit: int) -> list[int]:
        """Cut an input to limit tokens keeping the tokenizer's closing ones ([SEP]), as sentence-transformers does."""
        suffix = self.prompt_suffix
        if not suffix or ids[-len(suffix) :] != suffix or limit <= len(suffix):
            return ids[:limit]
        return ids[: limit - len(suffix)] + suffix
