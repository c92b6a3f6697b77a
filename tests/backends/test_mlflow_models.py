"""MLflow model directories as PALAVER_MODEL: real models saved by mlflow.transformers, then served."""

import pytest

from app import create_app
from commons import Settings
from palaver.backends.mlflow_models import find_mlflow_model
from palaver.backends.sources import resolve_settings
from palaver.core.errors import ConfigurationError


def resolved(environ: dict) -> Settings:
    """Read settings from environ and make their model ready, as a worker does at start-up."""
    return resolve_settings(Settings.from_env(environ), environ)


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
    settings = resolved({"PALAVER_MODEL": str(mlflow_chat)})
    assert (settings.max_new_tokens, settings.temperature, settings.repetition_penalty) == (7, 0.0, 1.3)
    assert settings.model_name == "mlflow-chat"
    explicit = resolved({"PALAVER_MODEL": str(mlflow_chat), "PALAVER_MAX_NEW_TOKENS": "3"})
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
    app = create_app({"SETTINGS": resolved(environ), "TESTING": True})  # as the server reads its environment
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
        app.extensions["palaver"].backend.close()
        app.extensions["palaver"].chat.store.close()


def test_a_flavour_palaver_cannot_serve_is_refused_at_start_up_by_name(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function: {}\n  sklearn: {pickled_model: model.pkl}\n")
    with pytest.raises(
        ConfigurationError, match="flavour sklearn; Palaver serves the transformers and openai flavours"
    ):
        resolved({"PALAVER_MODEL": str(tmp_path)})


def test_an_mlflow_model_saved_without_weights_is_refused_clearly(tmp_path):
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  transformers: {source_model_name: org/some-model, components: [tokenizer]}\n"
    )
    with pytest.raises(ConfigurationError, match="holds no weights.*org/some-model"):
        resolved({"PALAVER_MODEL": str(tmp_path)})


def save_openai_model(path, task="chat.completions", **saved):
    """Save an openai-flavour model as mlflow.openai does; it names the upstream's tiny chat model."""
    import warnings

    import mlflow.openai

    with warnings.catch_warnings():  # deprecated in favour of MLflow's prompt registry, and still how models are saved
        warnings.simplefilter("ignore", FutureWarning)
        mlflow.openai.save_model(model="chat-llama", task=task, path=str(path), pip_requirements=["openai"], **saved)
    return path


SYSTEM = {"role": "system", "content": "Answer in one word."}


@pytest.mark.parametrize(
    "saved, system_prompt, leading, user_template",
    [
        (
            {"messages": [SYSTEM, {"role": "user", "content": "Summarise: {sentence}"}]},
            SYSTEM["content"],
            [],
            "Summarise: {text}",
        ),
        ({"messages": [{"role": "user", "content": "Tell me a joke."}]}, "", [("user", "Tell me a joke.")], "{text}"),
        (
            {
                "messages": [
                    {"role": "user", "content": "2+2"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "{q}"},
                ]
            },
            "",
            [("user", "2+2"), ("assistant", "4")],
            "{text}",
        ),
        ({"messages": [{"role": "user", "content": 'As JSON {{"a": 1}}: {text}'}]}, "", [], 'As JSON {"a": 1}: {text}'),
        (
            {"task": "completions", "prompt": "{text}. The sentiment of the text is"},
            "",
            [],
            "{text}. The sentiment of the text is",
        ),
    ],
)
def test_an_openai_models_template_becomes_the_default_preset(tmp_path, saved, system_prompt, leading, user_template):
    from palaver.chat.presets import Presets

    path = save_openai_model(tmp_path / "bot", temperature=0.2, max_tokens=9, **saved)
    environ = {"PALAVER_MODEL": str(path), "OPENAI_BASE_URL": "http://upstream.test/v1", "OPENAI_API_KEY": "sk-t"}
    settings = resolved(environ)
    assert (settings.backend, settings.upstream_url, settings.upstream_api_key) == (
        "openai",
        "http://upstream.test/v1",
        "sk-t",
    )
    assert (settings.upstream_model, settings.temperature, settings.max_new_tokens) == ("chat-llama", 0.2, 9)
    preset = Presets(settings).default
    assert (preset.name, preset.system_prompt, preset.user_template) == ("mlflow", system_prompt, user_template)
    assert [(m.role, m.content) for m in preset.leading] == leading
    explicit = resolved({**environ, "PALAVER_UPSTREAM_URL": "http://other.test/v1", "PALAVER_PRESET": "default"})
    assert (explicit.upstream_url, Presets(explicit).default.name) == ("http://other.test/v1", "default")
    assert resolved({"PALAVER_MODEL": str(path)}).upstream_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    "saved, environ, words",
    [
        ({"task": "embeddings"}, {}, "task embeddings; Palaver serves chat.completions and completions"),
        ({"messages": [{"role": "user", "content": "{a} and {b}"}]}, {}, r"variables \['a', 'b'\]"),
        (
            {"messages": [{"role": "system", "content": "Be {tone}."}, {"role": "user", "content": "hi"}]},
            {},
            "outside its last",
        ),
        ({"task": "completions", "prompt": "no variable"}, {}, "variables none"),
        ({"messages": []}, {"PALAVER_BACKEND": "local"}, "served with PALAVER_BACKEND=openai"),
    ],
)
def test_an_openai_model_palaver_cannot_fill_is_refused_at_start_up(tmp_path, saved, environ, words):
    path = save_openai_model(tmp_path / "bot", **saved)
    with pytest.raises(ConfigurationError, match=words):
        resolved({"PALAVER_MODEL": str(path), **environ})


def test_an_openai_model_is_served_through_its_upstream_with_its_template(keyed_server, tmp_path):
    import openai

    question = {"role": "user", "content": "Summarise: {sentence}"}
    path = save_openai_model(tmp_path / "summariser", messages=[SYSTEM, question], max_tokens=3, temperature=0)
    environ = {
        "PALAVER_MODEL": str(path),
        "PALAVER_CACHE_DIR": str(tmp_path),
        "OPENAI_BASE_URL": f"{keyed_server}/v1",
        "OPENAI_API_KEY": "key-one",
    }
    app = create_app({"SETTINGS": resolved(environ), "TESTING": True})
    try:
        client = app.test_client()
        chat = client.post("/api/chat", json={"message": "the weather today"})
        assert chat.status_code == 200, chat.get_json()
        assert chat.get_json()["reply"] is not None and chat.get_json()["usage"]["completion_tokens"] <= 3
        upstream = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="key-one")
        templated = [SYSTEM, {"role": "user", "content": "Summarise: the weather today"}]
        direct = upstream.chat.completions.create(model="chat-llama", messages=templated, max_tokens=1)
        assert chat.get_json()["usage"]["prompt_tokens"] == direct.usage.prompt_tokens, "the template reached the model"
        ready = client.get("/readyz").get_json()
        assert (ready["backend"], ready["name"], ready["state"]) == ("openai", "chat-llama", "ready")
        frame = {"dataframe_split": {"columns": ["sentence"], "data": [["one"], ["two"], ["three"]]}}
        scored = client.post("/invocations", json=frame)
        assert scored.status_code == 200 and len(scored.get_json()["predictions"]) == 3
        full = client.post("/invocations", json={**frame, "params": {"return_full_text": True}}).get_json()
        assert all(text.startswith(row) for text, row in zip(full["predictions"], ["one", "two", "three"]))
    finally:
        app.extensions["palaver"].backend.close()
        app.extensions["palaver"].chat.store.close()


def test_registered_and_run_uris_are_fetched_into_the_cache_once(tmp_path, monkeypatch):
    import warnings

    import mlflow
    import mlflow.openai
    import openai

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")
    experiment = mlflow.create_experiment("tiny", artifact_location=(tmp_path / "artifacts").as_uri())  # not ./mlruns
    with mlflow.start_run(experiment_id=experiment) as run, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mlflow.openai.log_model(
            model="chat-llama",
            task=openai.chat.completions,
            messages=[SYSTEM],
            name="bot",
            pip_requirements=["openai"],
            registered_model_name="tiny-bot",
        )
    environ = {"PALAVER_CACHE_DIR": str(tmp_path / "cache")}
    registered = resolved({**environ, "PALAVER_MODEL": "models:/tiny-bot/1"})
    assert registered.model_name == "tiny-bot" and registered.backend == "openai"
    assert registered.model.startswith(str(tmp_path / "cache" / "mlflow"))
    from_run = resolved({**environ, "PALAVER_MODEL": f"runs:/{run.info.run_id}/bot"})
    assert from_run.model_name == "bot" and from_run.upstream_model == "chat-llama"
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'gone.db'}"
    )  # a fixed version is not fetched again
    assert resolved({**environ, "PALAVER_MODEL": "models:/tiny-bot/1"}).model == registered.model
    with pytest.raises(ConfigurationError, match="models:/tiny-bot/latest cannot be fetched"):
        resolved({**environ, "PALAVER_MODEL": "models:/tiny-bot/latest"})


TEXT2TEXT_MLMODEL = """\
flavors:
  python_function:
    loader_module: mlflow.transformers
    config: {max_new_tokens: 4}
  transformers:
    task: text2text-generation
    instance_type: Text2TextGenerationPipeline
    pipeline_model_type: BlenderbotForConditionalGeneration
    source_model_name: facebook/blenderbot-400M-distill
    model_binary: model
    components: [tokenizer]
    framework: pt
    transformers_version: 4.44.2
mlflow_version: 2.16.2
signature:
  inputs: '[{"type": "string", "required": true}]'
  outputs: '[{"type": "string", "required": true}]'
  params: '[{"name": "temperature", "type": "double", "default": 0.0, "shape": null}]'
"""


def test_a_text2text_model_saved_by_an_earlier_mlflow_is_served(blenderbot_model, tmp_path):
    # MLflow 3 on transformers 5 can no longer save one (the pipeline is gone), so the directory is laid out as
    # MLflow 2.16 on transformers 4 wrote it: the weights in model/, the tokenizer in components/tokenizer/.
    import shutil

    saved = tmp_path / "blenderbot-text2text"
    shutil.copytree(blenderbot_model, saved / "model")
    shutil.copytree(blenderbot_model, saved / "components" / "tokenizer")
    (saved / "MLmodel").write_text(TEXT2TEXT_MLMODEL)
    settings = resolved({"PALAVER_MODEL": str(saved), "PALAVER_CACHE_DIR": str(tmp_path)})
    assert (settings.max_new_tokens, settings.temperature) == (4, 0.0)
    app = create_app({"SETTINGS": settings, "TESTING": True})
    try:
        client = app.test_client()
        reply = client.post("/api/chat", json={"message": "hello", "stop": []})
        assert reply.status_code == 200 and 0 < reply.get_json()["usage"]["completion_tokens"] <= 4
        assert client.get("/readyz").get_json()["family"] == "blenderbot"
    finally:
        app.extensions["palaver"].backend.close()
        app.extensions["palaver"].chat.store.close()
