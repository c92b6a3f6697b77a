"""Embeddings on the worker: inputs checked by name, unit vectors, groups between steps that wait for pages."""

import threading
from collections import Counter

import numpy as np
import pytest
from timing import wait_until

from commons import Settings
from palaver.core.embeddings import EmbeddingRequest
from palaver.core.errors import ClientDisconnected, InvalidRequest
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, Caller, Reply, final
from palaver.engine.native.batch import NativeBatch
from palaver.engine.native.loading import load_native
from palaver.engine.prompting.model_family import Prompt
from palaver.engine.scheduling.embedding import (
    GROUP_TOKENS,
    EmbeddingJob,
    EmbeddingWork,
    embedding_texts,
    unit_vectors,
)
from palaver.engine.scheduling.in_flight import InFlight


@pytest.fixture(scope="module")
def family(gguf_chat_model, tmp_path_factory):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path_factory.mktemp("cache")), engine="native")
    return load_native(settings, "tiny", str(gguf_chat_model)).family


def test_texts_are_tokenized_as_raw_prompts_and_token_ids_taken_as_they_are(family):
    texts = embedding_texts(family, EmbeddingRequest(["hello there", [5, 6, 7]]))
    assert texts == [family.text_prompt("hello there", 1).input_ids, [5, 6, 7]]


def test_a_refusal_names_the_input_the_token_and_the_limit(family):
    vocabulary, limit, size = family.model.vocab_size, family.context_tokens, family.model.embedding_size
    cases = [
        (EmbeddingRequest([[1, 2], [3, 4, vocabulary]]), "input[1][2]", f"a token id from 0 to {vocabulary - 1}"),
        (EmbeddingRequest([[-1]]), "input[0][0]", "a token id"),
        (EmbeddingRequest(["a", [1] * (limit + 1)]), "input[1]", f"{limit + 1} tokens, and it embeds at most {limit}"),
        (EmbeddingRequest([[1] * (limit + 1)], param="prompt"), "prompt", f"at most {limit}"),
        (EmbeddingRequest(["a"], dimensions=size + 1), "dimensions", f"must be {size}"),
    ]
    for request, param, said in cases:
        with pytest.raises(InvalidRequest) as refused:
            embedding_texts(family, request)
        assert refused.value.param == param and said in refused.value.message, refused.value.message
    cut = EmbeddingRequest([[1] * (limit + 5)], truncate=True, dimensions=size)
    assert embedding_texts(family, cut) == [[1] * limit], "truncation keeps the first tokens the context holds"


def test_vectors_have_unit_length_in_float32_and_zeros_stay_zeros():
    vectors = unit_vectors(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert vectors == [[float(np.float32(0.6)), float(np.float32(0.8))], [0.0, 0.0]]


def test_a_group_holds_one_input_at_least_then_as_many_as_fit_the_group_tokens():
    job = EmbeddingJob(EmbeddingRequest(["x"]), [[1] * (GROUP_TOKENS + 1), [2] * 10, [3] * (GROUP_TOKENS - 10), [4]])
    sizes = []
    while not job.finished:
        group = job.next_group()
        sizes.append([len(text) for text in group])
        job.accept(np.ones((len(group), 2), dtype=np.float32), group)
    assert sizes == [[GROUP_TOKENS + 1], [10, GROUP_TOKENS - 10], [1]]
    assert job.embedded_tokens == 2 * GROUP_TOKENS + 2


def test_a_group_the_rows_leave_no_pages_for_waits_for_them_and_then_is_answered(family):
    cache = family.model.weights.new_cache(16, 4)
    batch = NativeBatch(cache)
    params = Settings(temperature=0.0, max_new_tokens=40).generation_defaults()
    running = family.new_row(Prompt([5] * 20, 0), params, threading.Event())
    running.stream.stop_token_ids = set()
    batch.add_many([running])  # its whole reply reserved: every page
    counts: Counter[str] = Counter()
    admission = InFlight(counts)
    work = EmbeddingWork(admission, counts)
    job = EmbeddingJob(EmbeddingRequest(["x", "y"]), [[5] * 20, [6] * 3])
    admission.started()
    work.add(job)
    work.run_next(batch)
    assert not job.result.done() and list(work.jobs) == [job], "it waits, keeping its turn"
    while batch.rows:
        batch.step()
        batch.remove_done()
    work.run_next(batch)
    answer = job.result.result()
    assert answer.prompt_tokens == 23 and len(answer.vectors) == 2 and not work.jobs
    assert admission.pending == 0 and counts["embeddings"] == 1 and cache.used_pages == 0
    cache.close()


def test_a_cancelled_job_is_dropped_before_it_starts_or_between_its_groups(family):
    batch = family.model.new_batch(None)
    counts: Counter[str] = Counter()
    admission = InFlight(counts)
    work = EmbeddingWork(admission, counts)
    before = EmbeddingJob(EmbeddingRequest(["x"]), [[1]])
    before.cancel()
    admission.started()
    work.add(before)
    assert counts["cancelled_before_start"] == 1 and not work.jobs and admission.pending == 0
    between = EmbeddingJob(EmbeddingRequest(["x", "y"]), [[1] * GROUP_TOKENS, [2]])
    admission.started()
    work.add(between)
    work.run_next(batch)
    between.request.cancel()
    work.run_next(batch)
    assert isinstance(between.result.exception(), ClientDisconnected) and admission.pending == 0 and not work.jobs


def test_an_engine_embeds_on_its_worker_queued_with_generations_and_charges_the_tokens_read(
    make_engine, gguf_chat_model
):
    engine = make_engine(gguf_chat_model)
    texts = ["hello there", "a b c " * 40, [1, 2, 3]]
    assert engine.state == "idle"
    alone = engine.embed(EmbeddingRequest(texts))  # the first request loads the model, as a generation's would
    assert engine.state == "ready" and len(alone.vectors) == 3 and engine.counts["embeddings"] == 1
    charged: list[int] = []

    def reserve(most: int):
        charged.append(most)
        return charged.append

    stream = engine.stream(GenerationRequest(engine.settings.generation_defaults(), prompt="hello there"))
    next(stream)  # queued: the texts are embedded between its steps
    token = CALLER.set(Caller("someone", reserve))
    try:
        beside = engine.embed(EmbeddingRequest(texts))
    finally:
        CALLER.reset(token)
    assert final(stream, Reply).usage.completion_tokens > 0
    assert beside.vectors == alone.vectors and beside.prompt_tokens == alone.prompt_tokens
    wait_until(lambda: len(charged) == 2, what="the reservation settled")
    assert charged == [alone.prompt_tokens] * 2, "reserved, then charged, the tokens the model read"
