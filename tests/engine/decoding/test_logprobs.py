"""Log-probabilities: of the distribution the step chose from, with the likeliest alternatives in a fixed order."""

import math

import numpy as np

from palaver.engine.decoding.logprobs import token_logprob, token_text

TOKENS = [b"a", b" b", b"\xc3", b"\xa9", b"<|end|>"]


def test_the_chosen_tokens_logprob_and_the_top_alternatives():
    logits = np.array([2.0, 1.0, 0.5, 0.5, -1.0], dtype=np.float32)
    entry = token_logprob(logits, 1, 3, TOKENS)
    expected = logits - np.log(np.exp(logits.astype(np.float64)).sum())
    assert math.isclose(entry.logprob, expected[1]) and entry.token == " b" and entry.bytes == (32, 98)
    # Likeliest first; the tie between tokens 2 and 3 goes to the lower id, wherever the row runs.
    assert [t.bytes for t in entry.top] == [(97,), (32, 98), (0xC3,)]
    assert [t.logprob for t in entry.top] == sorted((t.logprob for t in entry.top), reverse=True)
    assert token_logprob(logits, 0, 0, TOKENS).top == ()


def test_a_masked_distribution_reports_only_the_tokens_it_allows():
    logits = np.array([-np.inf, 1.0, -np.inf, 3.0, -np.inf], dtype=np.float32)
    entry = token_logprob(logits, 3, 20, TOKENS)
    assert [t.bytes for t in entry.top] == [(0xA9,), (32, 98)], "forbidden tokens are no alternatives"
    assert math.isclose(sum(math.exp(t.logprob) for t in entry.top), 1.0)


def test_part_of_a_character_shows_as_the_replacement_character_with_its_exact_bytes():
    entry = token_logprob(np.zeros(5, dtype=np.float32), 2, 0, TOKENS)
    assert entry.token == "\ufffd" and entry.bytes == (0xC3,)
    assert token_text(b"\xc3\xa9") == "é"
