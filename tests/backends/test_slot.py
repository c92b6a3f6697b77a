"""A configured model's slot: its state as clients see it, and what it is charged."""

from commons import Settings
from palaver.backends.model_list import ModelEntry
from palaver.backends.slot import Slot
from palaver.core.types import ModelLimits
from palaver.engine.engine import Engine


def test_a_slot_is_unloaded_until_its_engine_loads_and_is_charged_its_file_and_kv_budget(
    make_settings, gguf_chat_model
):
    settings = make_settings(gguf_chat_model, max_batch_size=2, max_context_tokens=256)
    slot = Slot(ModelEntry("tiny", str(gguf_chat_model)), settings)
    assert slot.state == "unloaded" and not slot.idle() and slot.weights_path() == str(gguf_chat_model)
    slot.backend = Engine(settings, name="tiny")
    try:
        assert slot.state == "unloaded", "made, not loading: nothing asked for it yet"
        assert slot.backend.wait_ready(60) and slot.state == "ready" and slot.idle()
        budget, used = slot.backend.kv_bytes()
        assert budget > 0 and used == 0
        took = slot.backend.load_bytes  # measured: the file's pages touched, and the tokenizer's objects
        assert slot.charge() == max(gguf_chat_model.stat().st_size, took) + budget
        slot.footprint = 10 * gguf_chat_model.stat().st_size  # its last load took more than its file says
        assert slot.need() == slot.footprint and slot.charge() >= slot.footprint + budget
        slot.users = 1
        assert not slot.idle(), "a model with a request in hand is not idle"
    finally:
        slot.backend.unload()
    assert slot.backend.model is None and slot.backend.kv_bytes() == (0, 0)


def test_a_source_that_is_not_there_has_no_path_until_its_load_says_why():
    assert Slot(ModelEntry("gone", "/nowhere/x.gguf"), Settings(model="/nowhere/x.gguf")).weights_path() == ""


def test_a_failed_load_waits_longer_each_time_before_it_is_tried_again(make_settings, tmp_path):
    settings = make_settings(tmp_path / "missing.gguf")
    slot = Slot(ModelEntry("gone", settings.model), settings)
    slot.backend = Engine(settings, name="gone")
    assert not slot.backend.wait_ready(60) and slot.state == "failed"
    first = slot.retry_in()
    assert 0 < first <= 1.0
    slot.failures = 3
    assert 7.0 < slot.retry_in() <= 8.0, "1 s, then 2, 4, 8…"
    slot.failures = 2000  # a model failing for days still waits a minute, never overflows
    assert slot.retry_in() <= 60.0, "never more than a minute"


def test_a_sentence_encoder_only_embeds_as_its_files_say_before_it_loads_and_its_family_after(
    make_settings, sentence_bert_model, gguf_chat_model
):
    encoder = Slot(ModelEntry("bert", str(sentence_bert_model)), make_settings(sentence_bert_model))
    chat = Slot(ModelEntry("tiny", str(gguf_chat_model)), make_settings(gguf_chat_model))
    assert encoder.embeds_only and not chat.embeds_only and encoder.state == "unloaded", "nothing loaded to tell"
    chat.limits = ModelLimits("sentence-encoder", 0.0, 48, 48, 0)  # a hub id's encoder, known once it loaded
    assert chat.embeds_only
