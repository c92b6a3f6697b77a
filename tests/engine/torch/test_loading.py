"""Loading models: a GGUF file converted or its metadata extracted once into the cache, and the embedded model."""

from palaver.core.config import EMBEDDED_MODEL_NAME
from palaver.engine.torch.loading import converted_gguf_dir, gguf_metadata_dir


def test_a_gguf_model_is_converted_once_to_safetensors(gguf_chat_model, tmp_path):
    converted = converted_gguf_dir(gguf_chat_model, str(tmp_path))
    assert (converted / "model.safetensors").is_file() and (converted / "tokenizer.json").is_file()
    assert "quantization_config" not in (converted / "config.json").read_text()
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert converted_gguf_dir(gguf_chat_model, str(tmp_path)) == converted, "the cached conversion is reused"
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".writing-")]


def test_embedded_model_holds_a_two_turn_conversation(embedded_cache, make_app):
    client = make_app("", cache_dir=str(embedded_cache), max_new_tokens=24).test_client()
    first = client.post("/api/chat", json={"message": "Hi! My name is Ada."})
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert body["reply"].strip() and body["usage"]["completion_tokens"] > 0
    second = client.post(
        "/api/chat", json={"message": "What is my name?", "conversation_id": body["conversation_id"]}
    ).get_json()
    assert second["reply"].strip()
    assert second["usage"]["prompt_tokens"] > body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    ready = client.get("/readyz").get_json()
    assert ready["name"] == EMBEDDED_MODEL_NAME and ready["family"] == "chat-template"
    assert ready["weights"] == "gguf-blocks", "the embedded model is served from its GGUF blocks"
    assert ready["engine"] == "native" and ready["kv_cache_bytes"] > 0


def test_a_gguf_models_metadata_is_extracted_once_without_weights(gguf_chat_model, tmp_path):
    extracted = gguf_metadata_dir(gguf_chat_model, str(tmp_path))
    assert {"config.json", "tokenizer.json", "tensors.json"} <= {p.name for p in extracted.iterdir()}
    assert not list(extracted.glob("*.safetensors")), "the weights stay in the GGUF file"
    assert "quantization_config" not in (extracted / "config.json").read_text()
    stamp = (extracted / "tensors.json").stat().st_mtime_ns
    assert gguf_metadata_dir(gguf_chat_model, str(tmp_path)) == extracted
    assert (extracted / "tensors.json").stat().st_mtime_ns == stamp
    assert not [p for p in extracted.parent.iterdir() if p.name.startswith(".writing-")]


def test_models_loaded_at_once_in_several_threads_keep_their_tied_heads(chat_model, dialogpt_model, tmp_path):
    import threading

    from transformers import PreTrainedModel

    from palaver.core.config import Settings
    from palaver.engine.torch.loading import load_model

    tie_weights = PreTrainedModel.tie_weights
    loaded = {}

    def load(index: int, model) -> None:
        loaded[index] = load_model(Settings(model=str(model), cache_dir=str(tmp_path / str(index)), weights="float32"))

    threads = [threading.Thread(target=load, args=(i, m)) for i, m in enumerate([chat_model, dialogpt_model] * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert PreTrainedModel.tie_weights is tie_weights, "transformers' loading patch left in place"
    tied = [loaded[index].family.model.module for index in (1, 3)]  # DialoGPT ties its head to its embeddings
    assert all(module.get_output_embeddings().weight is module.get_input_embeddings().weight for module in tied)
