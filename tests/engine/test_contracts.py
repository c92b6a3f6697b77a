"""The contracts: a model loaded on either path is a ServedModel, its batches are Batches, and both tell one story."""

import threading

import pytest

from commons import Message, Settings
from palaver.engine.contracts import Batch, ServedModel
from palaver.engine.native.loading import load_native
from palaver.engine.torch.loading import load_model


@pytest.fixture(scope="module")
def native_family(gguf_chat_model, tmp_path_factory):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path_factory.mktemp("native")), engine="native")
    loaded = load_native(settings, "tiny", str(gguf_chat_model))
    assert loaded is not None and loaded.engine == "native"
    yield loaded.family
    loaded.release()


@pytest.fixture(scope="module")
def torch_family(gguf_chat_model, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("torch"))
    return load_model(Settings(model=str(gguf_chat_model), cache_dir=cache, engine="transformers")).family


@pytest.mark.parametrize("path", ["native_family", "torch_family", "blenderbot_family"])
def test_either_path_serves_a_served_model_whose_batches_are_batches(request, path):
    family = request.getfixturevalue(path)
    assert isinstance(family.model, ServedModel)
    batch = family.start_batch()
    assert isinstance(batch, Batch)
    params = Settings(temperature=0.0, max_new_tokens=4).generation_defaults()
    batch.add(family.new_row(family.build_prompt([Message("user", "hello there")], 4), params, threading.Event()))
    batch.step()
    assert batch.rows or batch.finished_early
    vectors = batch.embed([[1, 2, 3], [4]])  # beside the rows, in the memory they share
    assert vectors is not None and vectors.shape == (2, family.model.embedding_size)
    batch.release()
    assert batch.rows == [] and family.model.kv_bytes()[1] == 0, "a released batch holds no rows and no KV pages"


@pytest.fixture(scope="module")
def blenderbot_family(blenderbot_model):
    return load_model(Settings(model=str(blenderbot_model))).family


def test_both_paths_read_the_same_facts_from_one_gguf_file(native_family, torch_family):
    native, through_torch = native_family.model, torch_family.model
    facts = ("model_type", "is_encoder_decoder", "context_length", "vocab_size", "embedding_size")
    assert {f: getattr(native, f) for f in facts} == {f: getattr(through_torch, f) for f in facts}
    assert native_family.pad_token_id == torch_family.pad_token_id
    # The native step also stops at the file's end-of-turn tokens, as llama.cpp does; transformers reads only EOS.
    assert set(torch_family.stop_token_ids) <= set(native_family.stop_token_ids)
