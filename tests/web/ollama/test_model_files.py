"""What a model's files say as Ollama lists models: a GGUF file's header, a model directory's config, or nothing."""

import os
import shutil

from palaver.web.ollama.model_files import STARTED, gguf_facts, human_count, model_facts


def test_a_gguf_files_header_gives_its_details_metadata_and_template(gguf_chat_model):
    facts = model_facts(str(gguf_chat_model), "chat-llama")
    assert (facts.format, facts.family, facts.context_length) == ("gguf", "llama", 512)
    assert facts.quantization_level in ("Q4_0", "Q4_1", "Q8_0"), "the type most of its matrices are stored in"
    assert facts.parameter_size == human_count(facts.info["general.parameter_count"]) and facts.size > 0
    assert "<|im_start|>" in facts.template and "tokenizer.chat_template" not in facts.info
    assert not any(isinstance(value, list) for value in facts.info.values()), "no vocabulary"
    assert facts.info["llama.context_length"] == 512 and len(facts.digest) == 64


def test_a_new_version_of_a_file_is_read_anew(gguf_chat_model, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(gguf_chat_model, copy)
    first = model_facts(str(copy), "copy")
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = model_facts(str(copy), "copy")
    assert second.digest != first.digest and second.modified_at > first.modified_at
    assert gguf_facts.cache_info().currsize >= 2


def test_a_model_directory_gives_its_architecture_and_type(chat_model):
    facts = model_facts(str(chat_model), "chat-llama")
    assert (facts.format, facts.family, facts.quantization_level) == ("safetensors", "llama", "F32")
    assert facts.size > 0 and facts.context_length == 512 and facts.template == ""


def test_a_thinking_models_vocabulary_says_it_thinks(gguf_chat_model, thinking_gguf_model, chat_model, thinking_model):
    assert model_facts(str(thinking_gguf_model), "t").thinks and model_facts(str(thinking_model), "t").thinks
    assert model_facts(str(gguf_chat_model), "c").thinks is False and model_facts(str(chat_model), "c").thinks is False
    assert model_facts("", "upstream").thinks is None, "nothing here to tell"


def test_a_model_with_nothing_to_read_is_described_by_its_name(tmp_path):
    for weights in ("", "org/some-model", str(tmp_path / "broken.gguf")):
        if weights.endswith(".gguf"):
            (tmp_path / "broken.gguf").write_bytes(b"not a gguf file")
        facts = model_facts(weights, "upstream")
        assert (facts.format, facts.size, facts.modified_at) == ("", 0, STARTED) and len(facts.digest) == 64


def test_parameter_counts_read_as_ollama_writes_them():
    assert [human_count(n) for n in (30_656, 134_515_008, 7_615_616_512)] == ["31K", "135M", "7.6B"]
