"""Session-wide tiny models, app factories and a real gunicorn server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

# Nothing in the suite may reach the network; PALAVER_* from the caller's shell must not leak in, but for the
# suite's own PALAVER_TEST_TIME_SCALE (tests/timing.py), which no server reads.
os.environ["HF_HUB_OFFLINE"] = "1"
for name in [n for n in os.environ if n.startswith("PALAVER_") and n != "PALAVER_TEST_TIME_SCALE"]:
    del os.environ[name]

import databases  # noqa: E402
import sanitized  # noqa: E402
import servers  # noqa: E402
from servers import reap_stopping, start_server  # noqa: E402
from warm_python import WarmPython  # noqa: E402

from commons import Settings  # noqa: E402
from inference import Engine  # noqa: E402
from palaver.backends import ModelRouter  # noqa: E402
from palaver.web.app import build_services, create_app  # noqa: E402

# Fixtures that start a real gunicorn server, and those that load the real embedded model: tests using them are
# marked, so that `pytest -m "not server"` or `-m "not slow"` leaves them out.
SERVER_FIXTURES = {
    "server",
    "keyed_server",
    "html_server",
    "markdown_server",
    "embedded_server",
    "fuzz_server",
    "hostile",
    "palaver",
}
SERVER_MODULES = {"test_persistence", "test_scale_out"}
EMBEDDED_FIXTURES = {"embedded_cache", "embedded_server"}
# The longest test files, slowest first, as `pytest --durations=0` sums them per file (docs/testing.md). They run
# first: pytest-xdist hands files out in collection order (pyproject.toml turns off its reordering by test count),
# so no long file starts last and keeps one process busy while the others have finished.
SLOWEST_FILES = [
    "backends/test_upstream.py",
    "test_fuzz.py",
    "backends/test_router.py",
    "engine/native/test_binding.py",  # its sanitized build, started with the session, is done by the time it runs
    "test_persistence.py",
    "test_scale_out.py",
    "web/test_http_worker.py",
    "test_browser.py",
    "cli/test_main.py",
    "web/test_accounts.py",
    "engine/native/test_loading.py",
    "web/openai/test_routes.py",
    "web/anthropic/test_routes.py",
    "test_browser_rendering.py",
    "test_browser_models.py",
    "test_packaging.py",
    "cli/test_jobs_interrupted.py",
    "test_server.py",
    "engine/gguf/test_tokenizer.py",
    "test_structured_output.py",
    "test_docs_examples.py",
]
TESTS = Path(__file__).resolve().parent


def lazy_module(name: str):
    """Return module name, to be imported when one of its attributes is first used (importlib's LazyLoader)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Imported on first use: xdist's controlling process, which runs no test, then never imports torch and transformers.
tiny_models = lazy_module("tiny_models")
servers.WARM = WarmPython()  # the suite's hundred servers skip importing their modules (tests/warm_python.py)


def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES or item.module.__name__.rsplit(".", 1)[-1] in SERVER_MODULES:
            item.add_marker(pytest.mark.server)
        if fixtures & EMBEDDED_FIXTURES:
            item.add_marker(pytest.mark.slow)
    items.sort(key=slowness_rank)  # a stable sort: each file's tests stay together and in order


def slowness_rank(item) -> int:
    """Return the item's file's place in SLOWEST_FILES, or after them all."""
    name = item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else ""
    return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)


def shared_temp(tmp_path_factory) -> Path:
    """Return the run's temporary directory that all of its test processes share."""
    shared = tmp_path_factory.getbasetemp()
    return shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared  # each process's own is in the run's


@pytest.fixture(scope="session", autouse=True)
def stopping_servers():
    """Reap, at the session's end, the fixtures' servers that were told to stop while the tests went on."""
    yield
    reap_stopping()


@pytest.fixture(scope="session", autouse=True)
def sanitized_build(request, tmp_path_factory):
    """Start the C++ tests' sanitized build when the session begins, if it runs them; yield where it is built."""
    # About 26 s of CPU that would otherwise hold up its test: it compiles while other tests run. One of the suite's
    # processes builds it, in the directory they share, and waits for it at the end.
    if not any("sanitized" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    shared = shared_temp(tmp_path_factory)
    build = sanitized.start(shared / "sanitized")
    yield shared / "sanitized"
    if build is not None:
        build.join()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def chat_model(models_dir) -> Path:
    return tiny_models.build_chat_llama(models_dir / "chat-llama")


@pytest.fixture(scope="session")
def long_chat_model(models_dir) -> Path:
    """The tiny chat Llama with 8,192 positions: its replies can run thousands of tokens, long enough to stop."""
    return tiny_models.build_chat_llama(models_dir / "long-chat-llama", max_positions=8192)


@pytest.fixture(scope="session")
def gguf_chat_model(chat_model, models_dir) -> Path:
    """The tiny chat Llama written as a GGUF file with Q4_0, Q4_1 and Q8_0 blocks."""
    return tiny_models.build_gguf_llama(chat_model, models_dir / "chat-llama.gguf")


@pytest.fixture(scope="session")
def long_gguf_chat_model(long_chat_model, models_dir) -> Path:
    """The tiny chat Llama with 8,192 positions as GGUF: room for a tools listing, on the native step."""
    return tiny_models.build_gguf_llama(long_chat_model, models_dir / "long-chat-llama.gguf")


@pytest.fixture(scope="session")
def slow_gguf_chat_model(models_dir) -> Path:
    """A chat Llama 1,536 wide as a float32 GGUF file: a reply of 1,024 tokens takes seconds, long enough to stop."""
    # About 7 ms a token on the native step here, where the tiny models take 0.1; its server starts without torch.
    wide = tiny_models.build_chat_llama(models_dir / "slow-chat-llama", max_positions=8192, width=1536)
    float32 = dict.fromkeys(tiny_models.GGUF_TYPES, "F32")
    return tiny_models.build_gguf_llama(wide, models_dir / "slow-chat-llama.gguf", float32)


@pytest.fixture(scope="session")
def k_quant_gguf_model(models_dir) -> Path:
    """A tiny chat Llama 256 wide, written as a GGUF file of Q4_K, Q5_K, Q6_K, Q5_0, Q5_1, F16 and BF16 tensors."""
    wide = tiny_models.build_chat_llama(models_dir / "wide-chat-llama", width=256)
    return tiny_models.build_gguf_llama(wide, models_dir / "wide-chat-llama.gguf", tiny_models.K_QUANT_TYPES)


@pytest.fixture(scope="session")
def low_bit_gguf_model(models_dir) -> Path:
    """A tiny chat Llama 256 wide, written as a GGUF file of Q2_K and Q3_K tensors."""
    wide = tiny_models.build_chat_llama(models_dir / "wide-chat-llama", width=256)
    return tiny_models.build_gguf_llama(wide, models_dir / "low-bit-chat-llama.gguf", tiny_models.LOW_BIT_TYPES)


@pytest.fixture(scope="session")
def qwen2_gguf_model(models_dir) -> Path:
    """A tiny Qwen2 (Q/K/V biases, rotary in halves, a tied head) written as a GGUF file of mixed block types."""
    qwen2 = tiny_models.build_chat_qwen2(models_dir / "chat-qwen2")
    return tiny_models.build_gguf_llama(qwen2, models_dir / "chat-qwen2.gguf")


@pytest.fixture(scope="session")
def qwen3_gguf_model(models_dir) -> Path:
    """A tiny Qwen3 (Q/K head norms, 128-wide heads) written as a GGUF file of mixed block types."""
    qwen3 = tiny_models.build_chat_qwen3(models_dir / "chat-qwen3")
    return tiny_models.build_gguf_llama(qwen3, models_dir / "chat-qwen3.gguf")


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.fixture(scope="session")
def thinking_model(models_dir) -> Path:
    """A tiny Llama with a Qwen3-style template that answers '<think>some thought</think>the answer' to anything."""
    return tiny_models.build_thinking_llama(models_dir / "thinking-llama")


@pytest.fixture(scope="session")
def thinking_gguf_model(thinking_model, models_dir) -> Path:
    """The thinking Llama as a GGUF file, its think tags user-defined tokens as in Qwen3's files."""
    return tiny_models.build_gguf_llama(thinking_model, models_dir / "thinking-llama.gguf", head=True)


@pytest.fixture(scope="session")
def llama3_scaled_model(models_dir) -> Path:
    """A tiny Llama with Llama 3's rotary scaling, its head tied to its embedding."""
    return tiny_models.build_chat_llama(models_dir / "llama3-scaled", width=64, rope=LLAMA3_ROPE)


@pytest.fixture(scope="session")
def llama3_scaled_gguf_model(llama3_scaled_model, models_dir) -> Path:
    """That Llama as a float32 GGUF file with the rope_freqs tensor llama.cpp's converter writes."""
    return tiny_models.build_gguf_llama(llama3_scaled_model, models_dir / "llama3-scaled.gguf", {})


@pytest.fixture(scope="session")
def sentencepiece_gguf_model(models_dir) -> Path:
    """A tiny Llama with a SentencePiece vocabulary (scores, byte tokens), written as a GGUF file."""
    llama = tiny_models.build_sentencepiece_llama(models_dir / "sentencepiece-llama")
    return tiny_models.build_gguf_llama(llama, models_dir / "sentencepiece-llama.gguf")


@pytest.fixture(scope="session")
def phi3_gguf_model(models_dir) -> Path:
    """A tiny Phi-3 (joined projections, an untied head, a SentencePiece vocabulary) written as a GGUF file."""
    phi3 = tiny_models.build_sentencepiece_phi3(models_dir / "phi3")
    return tiny_models.build_gguf_llama(phi3, models_dir / "phi3.gguf", {"attn_qkv": "Q8_0", "ffn_up": "Q5_0"})


@pytest.fixture(scope="session")
def phi3_longrope_model(models_dir) -> Path:
    """A tiny Phi-3 with LongRoPE over half of each head (as Phi-3.5 and Phi-4-mini), as transformers saves it."""
    return tiny_models.build_sentencepiece_phi3(models_dir / "phi3-longrope", longrope=True)


@pytest.fixture(scope="session")
def gemma3_model(models_dir) -> Path:
    """A tiny Gemma 3 (sliding layers of an 8-position window, four norms a layer, GELU), as transformers saves it."""
    return tiny_models.build_sentencepiece_gemma3(models_dir / "gemma3")


@pytest.fixture(scope="session")
def gemma3_gguf_model(gemma3_model, models_dir) -> Path:
    """That Gemma 3 written as a GGUF file of mixed block types, its norms stored as 1 + w as llama.cpp does."""
    return tiny_models.build_gguf_llama(gemma3_model, models_dir / "gemma3.gguf")


@pytest.fixture(scope="session")
def large_models(models_dir) -> tuple[str, int]:
    """Three native GGUF models of 38 MB each (float16 weights, 1,024 wide): big beside the RSS's noise."""
    root = models_dir / "large"
    wide = tiny_models.build_chat_llama(root / "wide", width=1024)
    types = {name: "F16" for name in tiny_models.GGUF_TYPES}
    paths = [tiny_models.build_gguf_llama(wide, root / f"wide-{letter}.gguf", types) for letter in "abc"]
    return ",".join(f"{letter}={path}" for letter, path in zip("abc", paths)), paths[0].stat().st_size


@pytest.fixture(scope="session")
def dialogpt_model(models_dir) -> Path:
    return tiny_models.build_dialogpt(models_dir / "dialogpt")


@pytest.fixture(scope="session")
def blenderbot_model(models_dir) -> Path:
    return tiny_models.build_blenderbot(models_dir / "blenderbot")


@pytest.fixture(scope="session")
def blenderbot_small_model(models_dir) -> Path:
    return tiny_models.build_blenderbot_small(models_dir / "blenderbot-small")


@pytest.fixture(scope="session")
def html_model(models_dir) -> Path:
    return tiny_models.build_html_replier(models_dir / "html-replier")


@pytest.fixture(scope="session")
def markdown_model(models_dir) -> Path:
    return tiny_models.build_fixed_replier(models_dir / "markdown-replier", tiny_models.MARKDOWN_REPLY_PIECES)


@pytest.fixture(scope="session")
def sentence_bert_model(models_dir) -> Path:
    """A tiny BertModel as sentence-transformers saves it: CLS-pooled, normalised, 48 tokens to a text."""
    return tiny_models.build_sentence_bert(models_dir / "sentence-bert")


@pytest.fixture(scope="session")
def sentence_xlm_roberta_model(models_dir) -> Path:
    """A tiny XLMRobertaModel as sentence-transformers saves it: mean-pooled, its positions after the padding id."""
    return tiny_models.build_sentence_xlm_roberta(models_dir / "sentence-xlm-roberta")


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL 15 server for the session, in a temporary directory."""
    with databases.postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """The URL of an empty database: a SQLite file, then a database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'palaver.db'}"
    return databases.fresh_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def make_settings(tmp_path):
    """Build settings for a test: greedy, short replies, a private cache directory."""

    def make(model: Path | str = "", **overrides) -> Settings:
        values = dict(
            model=str(model),
            cache_dir=str(tmp_path / "cache"),
            temperature=0.0,
            max_new_tokens=8,
            load_wait=30,
            request_timeout=30,
            # The Flask test client leaves an unread response open, which would keep its client's place:
            # in-process apps bound nothing per client unless a test asks (a real server closes every answer).
            client_share=0,
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_app(make_settings):
    """Create an app on a model (its engine loading with loader, if given); its services are closed after the test."""
    apps = []

    def make(model: Path | str, loader: Callable | None = None, **overrides):
        settings = make_settings(model, **overrides)
        app = create_app({"TESTING": True}, services=build_services(settings, loader))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["palaver"].close()


@pytest.fixture
def app(make_app, chat_model):
    return make_app(chat_model)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_engine(make_settings):
    engines = []

    def make(model: Path | str, **overrides) -> Engine:
        engine = Engine(make_settings(model, **overrides))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def make_router(make_settings):
    """Build the configured models' backend, as the app does; each is closed after the test."""
    routers = []

    def make(model: Path | str, **overrides) -> ModelRouter:
        router = ModelRouter(make_settings(model, **overrides))
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


@pytest.fixture(scope="session")
def server(gguf_chat_model, tmp_path_factory):
    """A real gunicorn server on the tiny chat model as GGUF (the native step), started from the Procfile."""
    with start_server(gguf_chat_model, tmp_path_factory.mktemp("server-cache"), max_new_tokens="8") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def keyed_server(gguf_chat_model, tmp_path_factory):
    """A server that requires API keys, on the tiny chat model as GGUF."""
    with start_server(
        gguf_chat_model, tmp_path_factory.mktemp("keyed"), api_keys="key-one, key-two", max_new_tokens="4"
    ) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def html_server(html_model, tmp_path_factory):
    """A server whose model always answers '<script>alert(1)</script>'."""
    with start_server(html_model, tmp_path_factory.mktemp("html")) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def markdown_server(markdown_model, tmp_path_factory):
    """A server whose model answers a Markdown list, table, code block and links, carrying XSS payloads."""
    with start_server(markdown_model, tmp_path_factory.mktemp("markdown")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def hub():
    """A local Hugging Face Hub for one test file (tests/fake_hub.py): nothing in the suite reaches the real one."""
    from fake_hub import fake_hub

    with fake_hub() as running:
        yield running


@pytest.fixture
def hub_home(hub, tmp_path, monkeypatch):
    """Point huggingface_hub at the local Hub, with an empty cache of the test's own; return PALAVER_CACHE_DIR."""
    from fake_hub import use_hub

    use_hub(monkeypatch, hub, tmp_path / "hf")
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium (Debian's), driven by Playwright, for one test file (its event loop stops with it)."""
    from browsers import CHROMIUM, CHROMIUM_ARGS
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def pages_closed(request):
    """Close the pages a test opened in its file's Chromium: one left open would go on running its scripts."""
    yield
    if "chromium" in request.fixturenames:
        for context in request.getfixturevalue("chromium").contexts:
            context.close()


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """A cache of this process's own holding the embedded GGUF's tokenizer and config, extracted once a run."""
    from palaver.engine.model_sources import embedded_gguf_path
    from palaver.engine.torch.loading import gguf_metadata_dir

    # About 5 s of CPU (transformers builds the tokenizer): one of the suite's processes extracts it for all, and
    # each copies it, since a test may write its own files (a database) into its cache.
    extracted = shared_temp(tmp_path_factory) / "embedded-cache"
    with FileLock(f"{extracted}.lock"):
        if not (extracted / "extracted").exists():
            gguf_metadata_dir(embedded_gguf_path(), str(extracted))
            (extracted / "extracted").touch()
    cache = tmp_path_factory.mktemp("embedded-cache")
    shutil.copytree(extracted, cache, dirs_exist_ok=True)
    return cache


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory):
    """A server on the real embedded model, slow enough to watch streaming and stopping (native: no extraction)."""
    with start_server("", tmp_path_factory.mktemp("embedded-server"), max_new_tokens="300") as base_url:
        yield base_url
