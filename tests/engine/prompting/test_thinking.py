"""Thinking models: told from their vocabulary at load, their replies' reasoning read apart from the answer."""

import json

import pytest
from tiny_models import THINKING_ANSWER, THINKING_THOUGHT
from transformers import AutoTokenizer

from palaver.core.config import Settings
from palaver.core.json_schemas import ResponseFormat
from palaver.core.parameters import with_given
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message, PromptInfo, ReasoningDelta, Reply
from palaver.engine.engine import Engine
from palaver.engine.prompting.thinking import ThinkTags

HELLO = [Message("user", "hello there")]
ONE = {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tokenizer(thinking_model):
    return AutoTokenizer.from_pretrained(thinking_model)


@pytest.fixture(scope="module")
def engine(thinking_gguf_model, tmp_path_factory):
    """The thinking Llama on the native step."""
    cache = tmp_path_factory.mktemp("thinking")
    engine = Engine(Settings(model=str(thinking_gguf_model), cache_dir=str(cache), temperature=0.0, max_new_tokens=8))
    yield engine
    engine.unload()


def ask(engine, grammar=None, **params) -> list:
    """Return the events of a reply to HELLO with params."""
    request = GenerationRequest(with_given(engine.settings.generation_defaults(), **params), HELLO, grammar=grammar)
    return list(engine.stream(request))


def test_a_model_thinks_where_its_vocabulary_holds_both_tags_as_tokens(tokenizer, thinking_model, chat_model):
    tags = ThinkTags.of(tokenizer)
    assert tags is not None and tokenizer.convert_ids_to_tokens([tags.open_id, tags.close_id]) == [
        "<think>",
        "</think>",
    ]
    assert tags.spelled == {}, "Qwen3's tags are not special: decoding keeps them"
    assert ThinkTags.of(AutoTokenizer.from_pretrained(chat_model)) is None, "'<think>' takes several tokens there"
    marked = AutoTokenizer.from_pretrained(thinking_model)
    marked.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    assert ThinkTags.of(marked).spelled == {tags.open_id: "<think>", tags.close_id: "</think>"}, "spelled back"


@pytest.mark.parametrize(
    "ending, inside",
    [
        ("<|im_start|>assistant\n<think>\n", True),  # as DeepSeek-R1's template ends the prompt
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # Qwen3's, with thinking turned off
        ("<|im_start|>assistant\n", False),
        ("say <think><|im_end|>\n<|im_start|>assistant\n", False),  # a tag in a message is not the prompt's end
    ],
)
def test_a_prompt_that_ends_opening_the_thinking_starts_the_reply_inside_it(tokenizer, ending, inside):
    tags = ThinkTags.of(tokenizer)
    ids = tokenizer.encode(f"<|im_start|>user\nhello<|im_end|>\n{ending}", add_special_tokens=False)
    assert tags.starts_inside(tokenizer, ids) is inside


def test_the_reasoning_streams_apart_before_the_answer_and_counts_in_the_usage(engine):
    info, *deltas, reply = ask(engine)
    assert isinstance(info, PromptInfo) and deltas == [ReasoningDelta(THINKING_THOUGHT), THINKING_ANSWER]
    assert (reply.text, reply.reasoning, reply.finish_reason) == (THINKING_ANSWER, THINKING_THOUGHT, "stop")
    assert (reply.usage.completion_tokens, reply.usage.reasoning_tokens) == (6, 3), "tags, thought; then 2 and EOS"
    off = ask(engine, thinking=False)[-1]
    assert (off.text, off.reasoning, off.usage.reasoning_tokens) == (THINKING_ANSWER, "", 0), "enable_thinking=False"
    assert ask(engine, thinking=True)[-1] == reply


def test_a_reply_cut_off_while_thinking_is_all_reasoning_and_stops_apply_to_the_answer(engine):
    cut = ask(engine, max_new_tokens=2)[-1]
    assert (cut.text, cut.reasoning, cut.finish_reason) == ("", THINKING_THOUGHT, "length")
    stopped = ask(engine, stop=("answer",))[-1]
    assert (stopped.text, stopped.stop_sequence, stopped.reasoning) == ("the ", "answer", THINKING_THOUGHT)
    unmoved = ask(engine, stop=("thought",))[-1]
    assert (unmoved.text, unmoved.stop_sequence) == (THINKING_ANSWER, None), "the thinking is not the answer"


def test_a_grammar_holds_the_answer_after_free_thinking(engine):
    schema = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "one", "schema": ONE}})
    for thinking, thought in ((None, THINKING_THOUGHT), (False, "")):
        reply: Reply = ask(
            engine, schema.grammar(), json_schema=schema.schema_text(), max_new_tokens=24, thinking=thinking
        )[-1]
        assert json.loads(reply.text) == {"a": 1} and reply.reasoning == thought and reply.finish_reason == "stop"
