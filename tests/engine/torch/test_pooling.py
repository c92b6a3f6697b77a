"""Embeddings on the torch path: the final hidden states (after the final norm), mean-pooled, each text alone."""

import numpy as np
import torch

from commons import Settings
from palaver.engine.torch.loading import load_model
from palaver.engine.torch.pooling import mean_hidden_states

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
