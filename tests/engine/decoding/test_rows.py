"""A row: it picks each token from its own logits, ends on its limit, a stop or a cancel, and fails alone."""

import threading

import numpy as np
import pytest
from transformers import AutoTokenizer

from palaver.core.config import Settings
from palaver.engine.decoding.rows import Row
from palaver.engine.decoding.streaming import ReplyStream


@pytest.fixture(scope="module")
def tokenizer(chat_model):
    return AutoTokenizer.from_pretrained(chat_model)


def row(tokenizer, max_new_tokens=3, **overrides):
    params = Settings(temperature=0.0, **overrides).generation_defaults()
    stream = ReplyStream(tokenizer, [tokenizer.eos_token_id])
    return Row([1, 2, 3], 0, params, max_new_tokens, stream, threading.Event())


def one_hot(size, token):
    logits = np.full(size, -10.0, dtype=np.float32)
    logits[token] = 10.0
    return logits


def test_a_row_takes_the_likeliest_token_and_ends_at_its_limit(tokenizer):
    reading = row(tokenizer)
    word = tokenizer.encode("hello", add_special_tokens=False)[0]
    for _ in range(3):
        assert not reading.done
        reading.accept(one_hot(len(tokenizer), word))
    reply = reading.reply()
    assert reading.done and reading.generated == [word] * 3
    assert reply.finish_reason == "length" and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)


def test_the_end_token_stops_and_a_cancel_ends_the_row(tokenizer):
    stopping = row(tokenizer)
    stopping.accept(one_hot(len(tokenizer), tokenizer.eos_token_id))
    assert stopping.done and stopping.reply().finish_reason == "stop"
    cancelled = row(tokenizer)
    cancelled.cancelled.set()
    assert cancelled.done and cancelled.reply().finish_reason == "cancelled"


def test_a_failure_while_choosing_ends_only_that_row(tokenizer):
    failing = row(tokenizer)
    failing.accept(np.zeros(0, dtype=np.float32))  # no token to choose from
    assert failing.done and failing.error is not None and failing.generated == []
