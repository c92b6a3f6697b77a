"""Batching on the native step: rows wait for KV room, prefill in chunks beside decoding rows, and reuse prefixes."""

import threading
from collections import Counter

import pytest
from helpers import steps_to_finish

from commons import Settings
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.native.batch import PREFILL_CHUNK_TOKENS, NativeBatch
from palaver.engine.native.loading import load_native
from palaver.engine.prompting.model_family import Prompt


@pytest.fixture(scope="module")
def family(gguf_chat_model, tmp_path_factory):
    # Stored turns would serve prompts from disk as their writer catches up: what these tests count is the batch's.
    cache = str(tmp_path_factory.mktemp("cache"))
    settings = Settings(model=str(gguf_chat_model), cache_dir=cache, engine="native", stored_turns_bytes=0)
    return load_native(settings, "tiny", str(gguf_chat_model)).family


def row(family, prompt_ids, tokens=6):
    params = Settings(temperature=0.0, max_new_tokens=tokens).generation_defaults()
    # Rows run to their length: the tiny model's end token would end some replies at random points.
    new = family.new_row(Prompt(list(prompt_ids), 0), params, threading.Event())
    new.stream.stop_token_ids = set()
    return new


def prompt(seed, length):
    return [(seed * 31 + i * 7) % 250 + 1 for i in range(length)]


def run(batch, limit=500):
    """Step the batch until every row is done; return the finished rows."""
    finished = []
    for _ in range(limit):
        if not batch.rows:
            return finished
        batch.step()
        finished += batch.remove_done()
    raise AssertionError("the batch did not finish")


def test_a_rows_reply_is_the_same_alone_and_beside_long_prefills_and_decodes(family):
    model = family.model
    alone = row(family, prompt(1, 20))
    batch = model.new_batch(None)
    batch.add_many([alone])
    run(batch)
    together = [row(family, prompt(2, 3 * PREFILL_CHUNK_TOKENS + 5), 4), row(family, prompt(1, 20)), row(family, [9])]
    batch = model.new_batch(None)
    batch.add_many(together[:1])
    batch.step()  # the long prompt's first chunk
    batch.add_many(together[1:])
    run(batch)
    assert together[1].generated == alone.generated and len(alone.generated) == 6
    assert model.cache.used_pages == 0, "every finished row gave its pages back"


def test_decoding_rows_get_a_token_every_step_while_a_long_prompt_prefills(family):
    batch = family.model.new_batch(None)
    decoding = row(family, prompt(3, 10), 40)
    batch.add_many([decoding])
    batch.step()
    long_prompt = row(family, prompt(4, 4 * PREFILL_CHUNK_TOKENS), 2)
    batch.add_many([long_prompt])
    steps = 0
    while not long_prompt.generated:
        before = len(decoding.generated)
        batch.step()
        steps += 1
        assert len(decoding.generated) == before + 1
    assert steps == 4, "the prompt came in chunks of PREFILL_CHUNK_TOKENS, one a step"
    run(batch)


def test_rows_wait_for_room_in_the_kv_budget_and_none_is_lost(family):
    cache = family.model.weights.new_cache(16, 6)  # room for two rows of 3 pages: a 30-token prompt, 10 more
    batch = NativeBatch(cache)
    rows = [row(family, prompt(seed, 30), 10) for seed in range(5)]
    batch.add_many(rows)
    assert len(batch.placed) == 2 and len(batch.waiting) == 3 and batch.rows == rows
    finished = run(batch)
    assert sorted(map(id, finished)) == sorted(map(id, rows)) and all(len(r.generated) == 10 for r in rows)
    assert cache.used_pages == 0
    cache.close()


def test_the_next_turn_reuses_the_previous_turns_pages(family):
    counts = Counter()
    prefix_cache = PrefixCache(4096, counts)
    batch = family.model.new_batch(prefix_cache)
    first = row(family, prompt(5, 40), 5)
    batch.add_many([first])
    run(batch)
    assert family.model.cache.used_pages > 0, "the finished turn's pages stay for the next"
    follow_up = first.prompt_ids + first.generated + prompt(6, 12)
    second, fresh = row(family, follow_up), row(family, follow_up)
    batch.add_many([second])
    run(batch)
    assert counts["reused_prompt_tokens"] == 44 and counts["prefilled_tokens"] == 40 + 13
    plain = family.model.new_batch(None)
    plain.add_many([fresh])
    run(plain)
    assert second.generated == fresh.generated
    prefix_cache.clear()
    assert family.model.cache.used_pages == 0


def test_a_row_cancelled_while_waiting_for_room_leaves_at_once(family):
    cache = family.model.weights.new_cache(16, 3)  # room for one row
    batch = NativeBatch(cache)
    running, waiting = row(family, prompt(7, 30), 10), row(family, prompt(8, 30), 10)
    batch.add_many([running, waiting])
    assert batch.waiting == [waiting]
    waiting.cancelled.set()
    assert batch.remove_done() == [waiting] and waiting.reply().finish_reason == "cancelled"
    assert batch.rows == [running] and not waiting.generated
    run(batch)
    assert cache.used_pages == 0
    cache.close()


def test_an_embedding_takes_the_prefix_caches_pages_and_waits_for_the_rows(family):
    cache = family.model.weights.new_cache(16, 4)
    counts = Counter()
    batch = NativeBatch(cache, PrefixCache(4096, counts))
    batch.add_many([row(family, prompt(3, 20), 4)])
    run(batch)
    assert cache.used_pages == 2, "the finished row's prompt is kept for the next turn"
    text = prompt(4, 40)  # three pages: only with the prefix cache's two given up
    alone = batch.embed([text])
    assert alone is not None and cache.used_pages == 0 and not batch.prefix_cache.entries
    running = row(family, prompt(5, 30), 30)  # its whole reply reserved: every page
    batch.add_many([running])
    assert cache.used_pages == 4 and batch.embed([text]) is None, "no room until the row ends"
    run(batch)
    assert batch.embed([text]).tobytes() == alone.tobytes()
    cache.close()


def test_a_reply_generated_on_its_own_uses_the_same_native_batch(family):
    params = Settings(temperature=0.0, max_new_tokens=5).generation_defaults()
    reply = family.generate(Prompt(prompt(9, 12), 0), params, threading.Event())
    assert reply.usage.completion_tokens >= 1 and family.model.cache.used_pages == 0


def test_choices_of_one_prompt_compute_it_once_and_greedy_choices_are_equal(family):
    counts = Counter()
    batch = family.model.new_batch(PrefixCache(4096, counts))
    alone = row(family, prompt(11, 40), 6)
    solo = family.model.new_batch(None)
    solo.add_many([alone])
    run(solo)
    choices = [row(family, prompt(11, 40), 6) for _ in range(4)]
    batch.add_many(choices)
    run(batch)
    assert all(choice.generated == alone.generated for choice in choices)
    assert counts["prefilled_tokens"] == 40 + 3 and counts["reused_prompt_tokens"] == 3 * 39
    batch.prefix_cache.clear()
    assert family.model.cache.used_pages == 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_drafted_replies_are_the_same_tokens_in_fewer_steps_and_refused_positions_are_forgotten(family, temperature):
    params = Settings(temperature=temperature, seed=11, max_new_tokens=40).generation_defaults()
    repeating = prompt(5, 12) * 3  # drafts come from the prompt's repeats, and the greedy reply's own
    replies, steps = {}, {}
    for speculate in (False, True):
        prefix_cache = PrefixCache(10_000)
        batch = NativeBatch(family.model.cache, prefix_cache, speculate=speculate)
        new = family.new_row(Prompt(list(repeating), 0), params, threading.Event())
        new.stream.stop_token_ids = set()
        batch.add_many([new])
        steps[speculate] = steps_to_finish(batch)
        replies[speculate] = new.generated
        # The finished row's cache holds exactly its prompt and reply (all but the last token), or it is not kept.
        assert list(prefix_cache.entries) == [tuple(repeating + new.generated[:-1])]
        prefix_cache.clear()
    assert replies[True] == replies[False] and len(replies[True]) == 40, "the same tokens, greedy or seeded"
    if temperature == 0.0:
        assert steps[True] < 0.75 * steps[False], steps
    assert family.model.cache.used_pages == 0
