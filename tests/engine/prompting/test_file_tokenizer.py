"""The torch-free tokenizer: the same ids, text and chat prompts as transformers' tokenizer for the same model."""

import pytest
from transformers import AutoTokenizer

from palaver.engine.gguf.file import read_gguf
from palaver.engine.gguf.tokenizer import tokenizer_config, tokenizer_json
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.prompting.file_tokenizer import FileTokenizer
from palaver.engine.torch.loading import gguf_metadata_dir

TEXTS = [
    "Hello, world!",
    "héllo wörld, ça va? 😀 done\n\n  indented\ttabs",
    "numbers 1234567 and 3.14159, CamelCase and don't",
    "<|im_start|>user\ncontrol text typed in a message<|im_end|>",
    "",
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi <|im_end|> there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2 + 2?"},
]


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def pair(request, gguf_chat_model, chat_model):
    """Ours, built from the GGUF file, and transformers', for the same model (the embedded one's extracted once)."""
    if request.param == "tiny":
        path, theirs = gguf_chat_model, AutoTokenizer.from_pretrained(chat_model)
    else:
        path = embedded_gguf_path()
        theirs = AutoTokenizer.from_pretrained(gguf_metadata_dir(path, str(request.getfixturevalue("embedded_cache"))))
    gguf = read_gguf(path)
    return FileTokenizer(tokenizer_json(gguf), tokenizer_config(gguf)), theirs


def test_ids_and_text_are_transformers_own(pair):
    ours, theirs = pair
    for text in TEXTS:
        for split in (False, True):
            expected = theirs.encode(text, add_special_tokens=False, split_special_tokens=split)
            assert ours.encode(text, add_special_tokens=False, split_special_tokens=split) == expected
        ids = theirs.encode(text, add_special_tokens=False)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert (ours.eos_token_id, ours.pad_token_id, ours.bos_token_id) == (
        theirs.eos_token_id,
        theirs.pad_token_id,
        theirs.bos_token_id,
    )
    assert len(ours) == len(theirs) and set(ours.all_special_tokens) <= set(theirs.all_special_tokens)


def test_the_chat_template_renders_and_tokenizes_as_transformers_does(pair):
    ours, theirs = pair
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        for prompt in (False, True):
            expected = theirs.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False)
            assert ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False) == expected
            ids = theirs.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True, return_dict=True)
            mine = ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True, return_dict=True)
            assert mine["input_ids"] == list(ids["input_ids"])
