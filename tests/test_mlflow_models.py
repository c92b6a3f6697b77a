"""MLflow model directories as PALAVER_MODEL: real models saved by mlflow.transformers, then served."""

import pytest

from app import create_app
from commons import Settings
from palaver.errors import ConfigurationError
from palaver.mlflow_models import find_mlflow_model


def save_mlflow_model(source, path, task="text-generation", model_config=None, signature_defaults=None):
    """Save a tiny model as MLflow does; a text-generation model gets a signature whose params carry defaults."""
    import mlflow.transformers
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kinds = {int: "long", float: "double", bool: "boolean"}
    params = [ParamSpec(name, kinds[type(value)], value) for name, value in (signature_defaults or {}).items()]
    signature = ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(params) if params else None,
    )
    if task != "text-generation":  # llm/v1/chat: MLflow writes the chat signature itself
        signature = None
    mlflow.transformers.save_model(
        transformers_model={
            "model": AutoModelForCausalLM.from_pretrained(source),
            "tokenizer": AutoTokenizer.from_pretrained(source),
        },
        path=str(path),
        task=task,
        signature=signature,
        model_config=model_config,
        pip_requirements=["transformers"],  # skips MLflow's scan of the environment, which is slow and needs more
    )
    return path


@pytest.fixture(scope="session")
def mlflow_chat(chat_model, tmp_path_factory):
    """The tiny chat Llama as an MLflow transformers model: config max_new_tokens 5, signature max_new_tokens 7."""
    return save_mlflow_model(
        chat_model,
        tmp_path_factory.mktemp("mlflow") / "mlflow-chat",
        model_config={"max_new_tokens": 5, "repetition_penalty": 1.3, "num_beams": 1},
        signature_defaults={"max_new_tokens": 7, "temperature": 0.0},
    )


@pytest.fixture(scope="session")
def mlflow_llm_chat(chat_model, tmp_path_factory):
    """The tiny chat Llama saved as an llm/v1/chat model, as MLflow's chat models are served."""
    return save_mlflow_model(chat_model, tmp_path_factory.mktemp("mlflow") / "mlflow-llm-chat", task="llm/v1/chat")


@pytest.fixture(scope="session")
def mlflow_dialogpt(dialogpt_model, tmp_path_factory):
    """The tiny DialoGPT as an MLflow transformers model, as a conversational pipeline is logged today."""
    return save_mlflow_model(dialogpt_model, tmp_path_factory.mktemp("mlflow") / "mlflow-dialogpt")


def test_the_saved_defaults_become_palavers_and_an_explicit_variable_still_wins(mlflow_chat):
    settings = Settings.from_env({"PALAVER_MODEL": str(mlflow_chat)})
    assert (settings.max_new_tokens, settings.temperature, settings.repetition_penalty) == (7, 0.0, 1.3)
    assert settings.model_name == "mlflow-chat"
    explicit = Settings.from_env({"PALAVER_MODEL": str(mlflow_chat), "PALAVER_MAX_NEW_TOKENS": "3"})
    assert explicit.max_new_tokens == 3 and explicit.temperature == 0.0
    saved = find_mlflow_model(str(mlflow_chat))
    assert saved.model_dir.name == "model" and saved.tokenizer_dir.parts[-2:] == ("components", "tokenizer")


@pytest.mark.parametrize(
    "fixture, family",
    [("mlflow_chat", "chat-template"), ("mlflow_llm_chat", "chat-template"), ("mlflow_dialogpt", "eos-joined")],
)
def test_an_mlflow_model_is_served_with_its_defaults_and_requests_override_them(request, tmp_path, fixture, family):
    path = request.getfixturevalue(fixture)
    environ = {"PALAVER_MODEL": str(path), "PALAVER_CACHE_DIR": str(tmp_path), "PALAVER_TEMPERATURE": "0"}
    app = create_app({"SETTINGS": Settings.from_env(environ), "TESTING": True})  # as the server reads its environment
    try:
        client = app.test_client()
        first = client.post("/api/chat", json={"message": "hello", "stop": []}).get_json()
        limit = 7 if fixture == "mlflow_chat" else Settings().max_new_tokens  # the signature's default, or Palaver's
        assert first["reply"] is not None and first["usage"]["completion_tokens"] <= limit
        shorter = client.post("/api/chat", json={"message": "hello", "max_new_tokens": 2, "stop": []}).get_json()
        assert shorter["usage"]["completion_tokens"] <= 2
        ready = client.get("/readyz").get_json()
        assert ready["family"] == family and ready["name"] == path.name
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}  # MLflow's llm/v1/chat payload
        scored = client.post("/invocations", json=chat)
        assert scored.status_code == 200 and scored.get_json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        app.extensions["palaver"]["engine"].close()
        app.extensions["palaver"]["chat"].store.close()


def test_a_flavour_palaver_cannot_serve_is_refused_at_start_up_by_name(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function: {}\n  sklearn: {pickled_model: model.pkl}\n")
    with pytest.raises(ConfigurationError, match="flavour sklearn; Palaver serves the transformers flavour"):
        Settings.from_env({"PALAVER_MODEL": str(tmp_path)})


def test_an_mlflow_model_saved_without_weights_is_refused_clearly(tmp_path):
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  transformers: {source_model_name: org/some-model, components: [tokenizer]}\n"
    )
    with pytest.raises(ConfigurationError, match="holds no weights.*org/some-model"):
        Settings.from_env({"PALAVER_MODEL": str(tmp_path)})
