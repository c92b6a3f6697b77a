"""A transformers model served through torch: the facts its config gives, and the batch each kind of model runs."""

import pytest
from transformers import PretrainedConfig

from commons import Settings
from palaver.core.errors import GenerationFailed
from palaver.engine.torch.batching import CausalBatch, Seq2SeqBatch
from palaver.engine.torch.lean_decoder import LlamaDecoder
from palaver.engine.torch.loading import load_model
from palaver.engine.torch.pooling import SentenceBatch
from palaver.engine.torch.served import DEFAULT_CONTEXT, context_length, ids_of


def served(path):
    return load_model(Settings(model=str(path))).family.model


def test_a_causal_model_reports_its_configs_facts_and_runs_a_causal_batch(chat_model, dialogpt_model):
    llama, gpt2 = served(chat_model), served(dialogpt_model)
    config = llama.module.config
    assert (llama.model_type, llama.is_encoder_decoder) == ("llama", False)
    assert llama.context_length == config.max_position_embeddings and llama.vocab_size == config.vocab_size
    assert isinstance(llama.decoder, LlamaDecoder) and isinstance(llama.new_batch(None), CausalBatch)
    assert gpt2.context_length == gpt2.module.config.n_positions, "GPT-2 names its context n_positions"
    assert gpt2.decoder is None and gpt2.decoder_start_id is None and isinstance(gpt2.new_batch(None), CausalBatch)
    assert llama.kv_bytes() == gpt2.kv_bytes() == (0, 0), "the torch path keeps no KV budget of its own"


def test_an_encoder_decoder_model_runs_a_seq2seq_batch_from_its_decoder_start(blenderbot_model):
    model = served(blenderbot_model)
    assert model.is_encoder_decoder and model.decoder_start_id == model.module.config.decoder_start_token_id
    batch = model.new_batch(None)
    assert isinstance(batch, Seq2SeqBatch) and batch.decoder_start_id == model.decoder_start_id


def test_a_sentence_encoder_reads_its_bound_pools_its_width_and_runs_an_embedding_batch(
    sentence_bert_model, sentence_xlm_roberta_model
):
    bert, xlm_roberta = served(sentence_bert_model), served(sentence_xlm_roberta_model)
    assert bert.embeds_only and xlm_roberta.embeds_only and not bert.is_encoder_decoder
    assert bert.context_length == 48, "sentence-transformers' max_seq_length, within BERT's 64 positions"
    assert xlm_roberta.context_length == 64, "66 positions, of which the first two are kept for the padding id"
    assert bert.embedding_size == xlm_roberta.embedding_size == 32 and bert.vocab_size == bert.module.config.vocab_size
    assert bert.token_types and not xlm_roberta.token_types, "as their tokenizers make token type ids or not"
    batch = bert.new_batch(None)
    assert isinstance(batch, SentenceBatch) and batch.pooling == ("cls_token",) and batch.rows == []
    assert batch.remove_done() == [] and bert.kv_bytes() == (0, 0)
    with pytest.raises(GenerationFailed, match="only embeds"):
        batch.add_many([object()])  # type: ignore[list-item]


def test_a_config_without_a_context_length_gets_the_default():
    assert context_length(PretrainedConfig()) == DEFAULT_CONTEXT
    assert context_length(PretrainedConfig(max_sequence_length=77)) == 77


def test_a_token_id_field_is_read_as_a_tuple_whatever_its_form():
    assert (ids_of(None), ids_of(3), ids_of([3, 5])) == ((), (3,), (3, 5))
