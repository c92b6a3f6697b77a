"""Incremental decoding: whole characters only, stop sequences cut out, nothing emitted twice."""

import pytest
from transformers import AutoTokenizer

from palaver.core.reasoning import ReasoningSplitter
from palaver.engine.decoding.streaming import ReplyStream
from palaver.engine.prompting.thinking import ThinkTags

TEXT = "héllo wörld, ça va? 😀 done"


@pytest.fixture(scope="module")
def tokenizer(chat_model):
    return AutoTokenizer.from_pretrained(chat_model)


def run(tokenizer, text, stop_sequences=(), stop_token=None):
    """Feed text to a ReplyStream token by token, as the batch does; return (stream, deltas)."""
    deltas = []
    stream = ReplyStream(tokenizer, [tokenizer.eos_token_id], stop_sequences, deltas.append)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([stop_token] if stop_token else [])
    for token in ids:
        stream.add(token)
        if stream.stopped:
            break
    stream.end()
    return stream, deltas


def test_multi_byte_characters_are_never_split_across_deltas(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(TEXT.encode()) // 2, "the tiny tokenizer splits characters into bytes"
    stream, deltas = run(tokenizer, TEXT)
    assert "".join(deltas) == stream.text == TEXT
    assert all("\ufffd" not in delta for delta in deltas) and len(deltas) > 5


def test_a_stop_sequence_ends_the_reply_and_is_left_out(tokenizer):
    stream, deltas = run(tokenizer, "Hello there###and more", ["###"])
    assert stream.text == "".join(deltas) == "Hello there" and stream.matched_stop == "###"


def test_text_that_only_looks_like_a_stop_sequence_is_released(tokenizer):
    stream, deltas = run(tokenizer, "a ## b #", ["###"])
    assert stream.text == "".join(deltas) == "a ## b #" and not stream.stopped and stream.matched_stop is None


def test_the_earliest_of_several_stop_sequences_wins(tokenizer):
    stream, _ = run(tokenizer, "one\ntwo END three", ["END", "\n"])
    assert stream.text == "one" and stream.matched_stop == "\n"


def test_an_end_of_sequence_token_stops_the_stream(tokenizer):
    stream, deltas = run(tokenizer, "short", stop_token=tokenizer.eos_token_id)
    assert stream.text == "short" and stream.hit_stop_token and "".join(deltas) == "short"


def test_leading_whitespace_is_dropped(tokenizer):
    stream, deltas = run(tokenizer, "   \n hello")
    assert stream.text == "hello" and deltas[0].startswith("h")


@pytest.mark.parametrize("special", [False, True])
def test_a_thinking_models_reasoning_goes_apart_and_its_tags_are_read_even_where_decoding_drops_them(
    thinking_model, special
):
    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    if special:  # a file that marks its tags special: decoding with skip_special_tokens would drop them
        tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tags = ThinkTags.of(tokenizer)
    thoughts, answers = [], []
    stream = ReplyStream(
        tokenizer,
        [tokenizer.eos_token_id],
        ["END"],
        answers.append,
        True,
        ReasoningSplitter(),
        thoughts.append,
        tags.spelled,
    )
    ids = tokenizer.encode("<think>\nit ends END here\n</think>\n\nthe answer END more", add_special_tokens=False)
    for token in ids:
        stream.add(token)
    stream.end()
    assert "".join(thoughts) == stream.reasoning == "it ends END here", "stop sequences apply to the answer alone"
    assert "".join(answers) == stream.text == "the answer " and stream.matched_stop == "END"
    assert stream.reasoning_tokens == ids.index(tags.close_id) + 1


def test_a_reply_that_starts_inside_the_thinking_needs_no_opening_tag(thinking_model):
    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    stream = ReplyStream(tokenizer, [tokenizer.eos_token_id], splitter=ReasoningSplitter(inside=True))
    for token in tokenizer.encode("\nfrom the prompt's tag\n</think>\n\nanswer", add_special_tokens=False):
        stream.add(token)
    stream.end()
    assert (stream.reasoning, stream.text) == ("from the prompt's tag", "answer")
