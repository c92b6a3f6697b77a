"""Model families on tiny random models of each real architecture."""

import threading

import pytest
from helpers import conversation, family_of

from commons import Message, Settings
from palaver.core.errors import InvalidRequest
from palaver.core.history import TRUNCATION_BLOCK

GREEDY = Settings(temperature=0.0, max_new_tokens=8).generation_defaults()


def reply_to(family, messages, params=GREEDY, cancelled=None):
    prompt = family.build_prompt(messages, params.max_new_tokens)
    return family.generate(prompt, params, cancelled or threading.Event())


@pytest.mark.parametrize("fixture", ["chat_model", "dialogpt_model", "blenderbot_model", "blenderbot_small_model"])
def test_each_family_replies_within_its_token_budget(request, fixture):
    family = family_of(request.getfixturevalue(fixture))
    first = reply_to(family, conversation(3))
    again = reply_to(family, conversation(3))
    assert isinstance(first.text, str)
    assert 1 <= first.usage.completion_tokens <= 8
    assert first.usage.prompt_tokens > 0
    assert first.finish_reason in ("stop", "length")
    assert again == first  # greedy decoding is deterministic


@pytest.mark.parametrize("fixture", ["chat_model", "dialogpt_model", "blenderbot_model"])
def test_long_history_drops_oldest_turns_and_reports_how_many(request, fixture):
    family = family_of(request.getfixturevalue(fixture), max_context_tokens=64)
    history = conversation(21)
    prompt = family.build_prompt(history, max_new_tokens=8)
    assert prompt.truncated_turns > 0
    assert len(prompt.input_ids) <= family.input_limit(8)
    kept = history[prompt.truncated_turns :]
    assert kept[0].role == "user" and kept[-1] == history[-1]
    assert prompt.input_ids == family.encode(kept)


def test_system_message_is_never_dropped(chat_model):
    family = family_of(chat_model, max_context_tokens=96)
    system = Message("system", "you are palaver")
    prompt = family.build_prompt([system, *conversation(15)], max_new_tokens=8)
    assert prompt.truncated_turns > 0
    assert family.tokenizer.decode(prompt.input_ids).startswith("<|im_start|>system\nyou are palaver")


def test_message_longer_than_the_input_limit_is_a_clear_error(blenderbot_model):
    family = family_of(blenderbot_model)
    with pytest.raises(InvalidRequest) as caught:
        family.build_prompt([Message("user", "hello there " * 100)], max_new_tokens=8)
    assert caught.value.param == "message" and "at most 64 input tokens" in caught.value.message


def test_reply_length_is_capped_by_the_decoder_limit(blenderbot_model):
    family = family_of(blenderbot_model)
    params = Settings(temperature=0.0, max_new_tokens=1000).generation_defaults()
    reply = reply_to(family, [Message("user", "hello")], params)
    assert reply.usage.completion_tokens <= 63


def test_seeded_sampling_is_reproducible(chat_model):
    family = family_of(chat_model)
    params = Settings(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, seed=42).generation_defaults()
    replies = {reply_to(family, conversation(1), params).text for _ in range(2)}
    assert len(replies) == 1


def test_cancelled_request_stops_early(chat_model):
    family = family_of(chat_model)
    cancelled = threading.Event()
    cancelled.set()
    params = Settings(temperature=0.0, max_new_tokens=200).generation_defaults()
    reply = reply_to(family, conversation(1), params, cancelled)
    assert reply.finish_reason == "cancelled" and reply.usage.completion_tokens <= 2


@pytest.mark.parametrize("fixture", ["chat_model", "dialogpt_model", "blenderbot_model"])
def test_truncation_keeps_the_most_history_that_fits_in_few_encodes(request, fixture):
    family = family_of(request.getfixturevalue(fixture), max_context_tokens=64)
    history = conversation(1401)  # a hostile request: 1,401 messages
    calls = []
    real_encode = family.encode
    family.encode = lambda messages, *rest: calls.append(len(messages)) or real_encode(messages, *rest)
    prompt = family.build_prompt(history, max_new_tokens=8)
    assert len(calls) <= 12, "bisecting: about log2(700 user turns) encodes, not one per dropped turn"
    assert len(prompt.input_ids) <= family.input_limit(8)
    # Turns are dropped TRUNCATION_BLOCK user turns at a time, so that the prompt's start stays put for several
    # turns and the prefix cache keeps matching it: the block before the kept one would not have fitted.
    users = [i for i in range(prompt.truncated_turns) if history[i].role == "user"]
    earlier_start = users[-TRUNCATION_BLOCK] if len(users) >= TRUNCATION_BLOCK else 0
    assert len(real_encode(history[earlier_start:])) > family.input_limit(8), "no longer history would fit"
