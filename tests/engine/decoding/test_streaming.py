"""Incremental decoding: whole characters only, stop sequences cut out, nothing emitted twice."""

import pytest
from transformers import AutoTokenizer

from palaver.engine.decoding.streaming import ReplyStream

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
