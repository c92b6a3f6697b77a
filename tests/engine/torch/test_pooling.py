"""Embeddings on the torch path: the final hidden states (after the final norm), mean-pooled, each text alone; a
sentence encoder's pooled as sentence-transformers pools them."""

import shutil

import numpy as np
import pytest
import torch
from helpers import sentence_transformers_vectors
from transformers import AutoModel, AutoTokenizer

from commons import Settings
from palaver.engine.scheduling.embedding import unit_vectors
from palaver.engine.torch.loading import load_model
from palaver.engine.torch.pooling import POOLINGS, mean_hidden_states, sentence_vectors

TEXTS = [[5, 17, 42], [9], list(range(3, 40))]


def served(path):
    return load_model(Settings(model=str(path))).family.model


def test_a_causal_models_vectors_are_its_final_normed_states_averaged_each_text_alone(chat_model, dialogpt_model):
    for model in (served(chat_model), served(dialogpt_model)):
        together = mean_hidden_states(model.module, TEXTS, encoder_decoder=False)
        assert together.shape == (len(TEXTS), model.embedding_size) and together.dtype == np.float32
        base = model.module.base_model  # Llama's model, GPT-2's transformer: their last state is after the norm
        for index, text in enumerate(TEXTS):
            with torch.inference_mode():
                final = base(input_ids=torch.tensor([text])).last_hidden_state[0].mean(dim=0).numpy()
            assert np.allclose(together[index], final, rtol=0, atol=1e-6)
            alone = mean_hidden_states(model.module, [text], encoder_decoder=False)[0]
            assert alone.tobytes() == together[index].tobytes(), "a text's vector does not depend on its neighbours"


def test_an_encoder_decoder_models_vectors_are_its_encoders_states(blenderbot_model):
    model = served(blenderbot_model)
    assert model.embedding_size == model.module.config.d_model
    pooled = model.new_batch(None).embed(TEXTS[:2])
    with torch.inference_mode():
        encoded = model.module.get_encoder()(input_ids=torch.tensor([TEXTS[0]])).last_hidden_state[0].mean(dim=0)
    assert np.allclose(pooled[0], encoded.numpy(), rtol=0, atol=1e-6)


SENTENCES = ["hello there how are you", "the quick brown fox jumps over the lazy dog today", "a cat"]


def without_modules(path, tmp_path):
    """Copy a sentence encoder without sentence-transformers' files: a plain transformers model."""
    plain = tmp_path / "plain"
    shutil.copytree(path, plain, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "sentence_bert*"))
    return plain


@pytest.mark.parametrize(
    ("encoder", "pooling"),
    [
        ("sentence_bert_model", "cls_token"),
        ("sentence_xlm_roberta_model", "mean_tokens"),
        ("plain bert", "mean_tokens"),
    ],
)
def test_a_sentence_encoders_vectors_are_sentence_transformers_pooling_each_text_alone(
    request, tmp_path, encoder, pooling
):
    path = (
        without_modules(request.getfixturevalue("sentence_bert_model"), tmp_path)
        if encoder == "plain bert"
        else (request.getfixturevalue(encoder))
    )
    family = load_model(Settings(model=str(path), cache_dir=str(tmp_path / "cache"))).family
    texts = [family.embedding_ids(sentence) for sentence in SENTENCES]
    together = family.start_batch().embed(texts)
    expected = sentence_transformers_vectors(path, SENTENCES, pooling)  # one padded batch, through its mask
    assert np.allclose(unit_vectors(together), expected, rtol=0, atol=1e-6)
    for index, text in enumerate(texts):
        assert family.start_batch().embed([text])[0].tobytes() == together[index].tobytes(), "alone as beside others"


def test_every_pooling_mode_is_sentence_transformers_formula_and_several_are_joined(sentence_bert_model):
    model, tokenizer = (
        AutoModel.from_pretrained(sentence_bert_model).eval(),
        AutoTokenizer.from_pretrained(sentence_bert_model),
    )
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    lengths = mask.sum(dim=1)
    weights = mask * torch.arange(1, states.shape[1] + 1).view(1, -1, 1)
    last = batch["attention_mask"].sum(dim=1) - 1
    # sentence-transformers' models/Pooling.py, over a padded batch
    expected = {
        "cls_token": states[:, 0],
        "max_tokens": states.masked_fill(mask == 0, -1e9).max(dim=1).values,
        "mean_tokens": (states * mask).sum(dim=1) / lengths,
        "mean_sqrt_len_tokens": (states * mask).sum(dim=1) / lengths.sqrt(),
        "weightedmean_tokens": (states * weights).sum(dim=1) / weights.sum(dim=1),
        "lasttoken": states[torch.arange(len(SENTENCES)), last],
    }
    texts = [list(ids) for ids in tokenizer(SENTENCES)["input_ids"]]
    modes = tuple(POOLINGS)
    joined = sentence_vectors(model, texts, modes, token_types=True)
    assert joined.shape == (len(SENTENCES), len(modes) * model.config.hidden_size)
    for index, mode in enumerate(modes):
        width = model.config.hidden_size
        assert np.allclose(joined[:, index * width : (index + 1) * width], expected[mode].numpy(), atol=1e-5), mode
