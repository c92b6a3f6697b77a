"""Sampling: greedy is the argmax after the repetition penalty; a seed repeats itself; top-k and top-p restrict."""

import numpy as np

from palaver.core.config import Settings
from palaver.engine.decoding.sampling import Sampler


def params(**overrides):
    return Settings(**overrides).generation_defaults()


def test_greedy_takes_the_likeliest_token_after_the_repetition_penalty():
    logits = np.array([1.0, 3.0, 2.9, -1.0])
    assert Sampler(params(temperature=0.0, repetition_penalty=1.0)).choose(logits, []) == 1
    # Token 1 was seen: divided by 1.5, its 3.0 falls under token 2's 2.9. A negative seen score is multiplied.
    assert Sampler(params(temperature=0.0, repetition_penalty=1.5)).choose(logits, [1]) == 2
    assert Sampler(params(temperature=0.0, repetition_penalty=2.0)).choose(np.array([-1.0, -1.5]), [0]) == 1


def test_a_penalised_greedy_choice_leaves_the_callers_logits_as_they_were():
    rows = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    before = rows.copy()
    sampler = Sampler(params(temperature=0.0, repetition_penalty=1.3))
    seen = [int(rows[0].argmax()), 5, 5, 17]
    expected = before[0].copy()
    picked = expected[[int(rows[0].argmax()), 5, 17]]
    expected[[int(rows[0].argmax()), 5, 17]] = np.where(picked < 0, picked * 1.3, picked / 1.3)
    assert sampler.choose(rows[0:1], seen) == int(expected.argmax()) != int(before[0].argmax())
    assert np.array_equal(rows, before), "a view of the step's logits, put back whole"
    read_only = before[0].copy()
    read_only.flags.writeable = False
    assert sampler.choose(read_only, seen) == int(expected.argmax())


def test_a_seed_gives_the_same_choices_and_each_sampler_its_own_generator():
    logits = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    first = Sampler(params(temperature=1.0, top_k=0, top_p=1.0, seed=7))
    second = Sampler(params(temperature=1.0, top_k=0, top_p=1.0, seed=7))
    choices = [first.choose(logits, []) for _ in range(20)]
    assert choices == [second.choose(logits, []) for _ in range(20)] and len(set(choices)) > 1


def test_top_k_and_top_p_keep_only_the_likeliest_tokens():
    logits = np.array([5.0, 4.0, 0.0, -5.0])
    top_k = Sampler(params(temperature=1.0, top_k=2, top_p=1.0, seed=0))
    assert {top_k.choose(logits, []) for _ in range(100)} <= {0, 1}
    top_p = Sampler(params(temperature=1.0, top_k=0, top_p=0.5, seed=0))
    assert {top_p.choose(logits, []) for _ in range(100)} == {0}, "token 0 alone holds over half the mass"
