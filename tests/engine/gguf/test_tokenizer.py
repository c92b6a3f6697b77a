"""A GGUF file's tokenizer built without transformers: the same tokenizer.json, and refusals for other kinds."""

import json
from dataclasses import replace

import pytest
import tiny_models
from transformers import AutoTokenizer

from palaver.engine.gguf.file import read_gguf
from palaver.engine.gguf.tokenizer import end_of_turn_ids, tokenizer_config, tokenizer_json, unsupported
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.prompting.file_tokenizer import FileTokenizer
from palaver.engine.torch.loading import gguf_metadata_dir


def test_the_embedded_models_tokenizer_is_the_one_transformers_builds(embedded_cache):
    gguf = read_gguf(embedded_gguf_path())
    theirs = AutoTokenizer.from_pretrained(gguf_metadata_dir(embedded_gguf_path(), str(embedded_cache)))
    assert unsupported(gguf) is None
    assert json.loads(tokenizer_json(gguf)) == json.loads(theirs.backend_tokenizer.to_str())
    config = tokenizer_config(gguf)
    assert (config["eos_token"], config["bos_token"]) == (theirs.eos_token, theirs.bos_token)
    assert config["chat_template"] == theirs.chat_template


def test_other_kinds_of_tokenizer_are_named_and_left_to_transformers(gguf_chat_model):
    gguf = read_gguf(gguf_chat_model)
    assert unsupported(gguf) is None
    for changes, reason in (
        ({"tokenizer.ggml.model": "llama"}, "'llama', not byte-level BPE"),
        ({"tokenizer.ggml.pre": "chatglm-bpe"}, "'chatglm-bpe'"),
    ):
        assert reason in unsupported(replace(gguf, metadata={**gguf.metadata, **changes}))
    no_merges = {key: value for key, value in gguf.metadata.items() if key != "tokenizer.ggml.merges"}
    assert "no merges" in unsupported(replace(gguf, metadata=no_merges))


def test_a_turns_end_stops_beside_the_files_end_of_sequence(sentencepiece_gguf_model):
    gguf = read_gguf(sentencepiece_gguf_model)
    tokens = gguf.metadata["tokenizer.ggml.tokens"]
    assert [tokens[i] for i in end_of_turn_ids(gguf)] == ["</s>", "<|end|>"]
    embedded = read_gguf(embedded_gguf_path())
    names = {embedded.metadata["tokenizer.ggml.tokens"][i] for i in end_of_turn_ids(embedded)}
    assert names == {"<|im_end|>", "<|endoftext|>"}


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt-4o", "tekken"])
def test_each_pre_tokenizer_splits_text_as_transformers_does(chat_model, tmp_path, pre):
    """Llama 3's, Qwen2's, GPT-4o's (Phi-4-mini) and Tekken's (Mistral Nemo) splits: the same pieces, the same ids."""
    path = tiny_models.build_gguf_llama(chat_model, tmp_path / f"{pre}.gguf", {}, pre=pre)
    gguf = read_gguf(path)
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = FileTokenizer(tokenizer_json(gguf), tokenizer_config(gguf))
    assert (
        json.loads(tokenizer_json(gguf))["pre_tokenizer"]
        == json.loads(theirs.backend_tokenizer.to_str())["pre_tokenizer"]
    )
    for text in ["Hello WORLD's THE quick brown Fox", "tell me 1234567 bees\n\n  and   9 honey", "it'll DON'T café/x"]:
        assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False), text


@pytest.mark.parametrize("flag", [True, False, None])
def test_the_files_bos_flag_adds_bos_as_transformers_reads_it(chat_model, tmp_path, flag):
    path = tiny_models.build_gguf_llama(chat_model, tmp_path / "flagged.gguf", add_bos=flag)
    gguf = read_gguf(path)
    ours = FileTokenizer(tokenizer_json(gguf), tokenizer_config(gguf))
    theirs = AutoTokenizer.from_pretrained(gguf_metadata_dir(path, str(tmp_path)))
    for text in ("hello there", ""):
        assert ours.encode(text) == list(theirs.encode(text)), "a completion's prompt: BOS as the flag says"
        assert ours.encode(text, add_special_tokens=False) == list(theirs.encode(text, add_special_tokens=False))
    assert (ours.encode("hi")[0] == ours.bos_token_id) is bool(flag)


def test_a_sentencepiece_file_that_does_not_say_adds_bos(sentencepiece_gguf_model):
    metadata = dict(read_gguf(sentencepiece_gguf_model).metadata)
    assert tokenizer_config(replace(read_gguf(sentencepiece_gguf_model), metadata=metadata))["add_bos_token"] is True
    metadata.pop("tokenizer.ggml.add_bos_token")
    assert tokenizer_config(replace(read_gguf(sentencepiece_gguf_model), metadata=metadata))["add_bos_token"] is True
    metadata["tokenizer.ggml.add_eos_token"] = True
    assert tokenizer_config(replace(read_gguf(sentencepiece_gguf_model), metadata=metadata))["add_eos_token"] is True
