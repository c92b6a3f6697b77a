"""Sentence encoders: told from their files without loading them, pooled as sentence-transformers' files say, and
served by a family that embeds and generates nothing."""

import json
import shutil

import pytest

from commons import Message, Settings
from palaver.core.errors import InvalidRequest, ModelRefused
from palaver.engine.prompting.encoders import SentenceEncoderFamily, SentenceLayout, embeds_only, sentence_layout
from palaver.engine.torch.loading import load_model

MODULE = "sentence_transformers.models."


def write(path, name, value):
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(value))


def test_an_encoder_is_told_from_its_files_alone(tmp_path, sentence_bert_model, chat_model, gguf_chat_model):
    assert embeds_only(str(sentence_bert_model)), "sentence-transformers' modules.json"
    write(tmp_path / "plain", "config.json", {"model_type": "xlm-roberta"})
    assert embeds_only(str(tmp_path / "plain")), "an encoder's config alone, as a plain transformers model"
    assert not any(embeds_only(str(path)) for path in (chat_model, gguf_chat_model, tmp_path / "missing", ""))
    write(tmp_path / "broken", "config.json", "not an object")
    assert not embeds_only(str(tmp_path / "broken")), "a broken config is the load's to report"


def test_the_layout_says_how_it_pools_and_its_bound_and_mean_without_modules(tmp_path, sentence_bert_model, chat_model):
    assert sentence_layout(sentence_bert_model) == SentenceLayout(("cls_token",), max_seq_length=48)
    plain = tmp_path / "plain"
    shutil.copytree(sentence_bert_model, plain, ignore=shutil.ignore_patterns("modules.json", "sentence_bert*"))
    assert sentence_layout(plain) == SentenceLayout(("mean_tokens",)), "as sentence-transformers pools a plain model"
    write(tmp_path / "old", "modules.json", [{"path": "0_BERT", "type": MODULE + "Transformer"}])
    write(tmp_path / "old", "0_BERT/sentence_bert_config.json", {"max_seq_length": 128})
    assert sentence_layout(tmp_path / "old") == SentenceLayout(max_seq_length=128, encoder_path="0_BERT")
    write(tmp_path / "both", "modules.json", [{"path": "1_Pooling", "type": MODULE + "Pooling"}])
    modes = {"pooling_mode_lasttoken": True, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    write(tmp_path / "both", "1_Pooling/config.json", modes)
    assert sentence_layout(tmp_path / "both").pooling == ("cls_token", "lasttoken"), "joined in their order"
    assert sentence_layout(chat_model) is None, "a model that generates has no layout"


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"modules.json": [{"path": "2_Dense", "type": MODULE + "Dense"}]}, "Dense at '2_Dense' is not served"),
        ({"modules.json": [{"path": "x", "type": "my_package.Layer"}]}, "my_package.Layer"),
        ({"modules.json": [{"path": "p", "type": MODULE + "Pooling"}], "p/config.json": {"pooling_mode_x": True}}, "x"),
        ({"modules.json": [{"path": "p", "type": MODULE + "Pooling"}], "p/config.json": {}}, "pooling by nothing"),
        ({"modules.json": [], "sentence_bert_config.json": {"do_lower_case": True}}, "do_lower_case"),
    ],
)
def test_a_layout_palaver_cannot_follow_is_refused_naming_what(tmp_path, files, said):
    for name, value in files.items():
        write(tmp_path, name, value)
    with pytest.raises(ModelRefused, match=said):
        sentence_layout(tmp_path)


@pytest.fixture(scope="module")
def family(sentence_bert_model, tmp_path_factory):
    return load_model(Settings(model=str(sentence_bert_model), cache_dir=str(tmp_path_factory.mktemp("c")))).family


def test_the_family_embeds_within_its_bound_and_has_no_chat(family):
    assert isinstance(family, SentenceEncoderFamily) and family.embeds_only and family.model.embeds_only
    assert family.describe() == {
        "family": "sentence-encoder",
        "context_tokens": 48,
        "max_input_tokens": 48,
        "max_reply_tokens": 0,
    }
    with pytest.raises(InvalidRequest, match="only embeds") as refused:
        family.build_prompt([Message("user", "hello")], 8)
    assert refused.value.param == "messages"
    ids = family.embedding_ids("hello there")
    assert ids[:1] == family.prompt_prefix and ids[-1:] == family.prompt_suffix, "[CLS] ... [SEP]"
    assert family.cut_to(ids, 3) == ids[:2] + family.prompt_suffix, "cut as sentence-transformers cuts: [SEP] stays"
    assert family.cut_to([7, 8, 9], 2) == [7, 8], "ids that do not end as the tokenizer ends a text are cut plainly"
