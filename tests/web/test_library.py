"""The model library's page: shut without API keys, behind the key sign-in with them; a pull's progress streamed
(in Chromium, from a server that pulled its own model at start-up), removal, and a served model kept."""

import json

import pytest
from browsers import open_page
from fake_hub import hub_env, variant
from playwright import sync_api
from servers import procfile_server

SOURCE, OTHER = "hf:test/web-GGUF:Q4_0", "hf:test/web-GGUF:Q8_0"
STREAM = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def published(hub, gguf_chat_model):
    tiny = gguf_chat_model.read_bytes()
    hub.publish("test/web-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    return hub


def events(response) -> list[dict]:
    return [json.loads(line[5:]) for line in response.get_data(as_text=True).splitlines() if line.startswith("data:")]


def test_without_api_keys_the_library_is_shut(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model).test_client()
    page = client.get("/models")
    assert page.status_code == 403 and "PALAVER_API_KEYS" in page.get_data(as_text=True)
    pulled = client.post("/models/pull", data={"source": SOURCE}, headers={"Accept": "application/json"})
    assert pulled.status_code == 403 and pulled.json["error"]["code"] == "library_needs_keys"


def test_key_holders_pull_with_progress_streamed_and_remove_all_but_the_served_model(make_app, published, hub_home):
    client = make_app(SOURCE, api_keys="key-one").test_client()
    assert client.get("/models").status_code == 401, "the key page first"
    client.post("/key", data={"key": "key-one"})
    assert "No model pulled yet" in client.get("/models").get_data(as_text=True)
    streamed = events(client.post("/models/pull", data={"source": SOURCE}, headers=STREAM))
    statuses = [event["status"] for event in streamed]
    # A follower hears the latest state at each wake-up, so a busy machine may skip one; never one out of order.
    order = ["resolving", "downloading", "verifying", "done"]
    assert statuses == sorted(statuses, key=order.index) and statuses[-1] == "done", statuses
    assert streamed[-1]["name"] == "test/web-GGUF:Q4_0"
    page = client.get("/models").get_data(as_text=True)
    assert 'data-name="test/web-GGUF:Q4_0"' in page and ">served<" in page and ">llama<" in page
    refused = client.post("/models/remove", data={"name": SOURCE}, headers={"Accept": "application/json"})
    assert refused.status_code == 409 and "this server serves test/web-GGUF:Q4_0" in refused.json["error"]["message"]
    bad = client.post("/models/pull", data={"source": "qwen3"}, headers=STREAM)
    assert bad.status_code == 400 and bad.json["error"]["param"] == "source"
    assert events(client.post("/models/pull", data={"source": OTHER}, headers=STREAM))[-1]["status"] == "done"
    assert client.post("/models/remove", data={"name": OTHER}).status_code == 303
    page = client.get("/models").get_data(as_text=True)
    assert 'data-name="test/web-GGUF:Q8_0"' not in page and 'data-name="test/web-GGUF:Q4_0"' in page


@pytest.mark.browser
def test_the_page_pulls_a_model_with_its_progress_shown(chromium, published, gguf_chat_model, tmp_path):
    env = {
        **hub_env(published, tmp_path / "hf"),
        "PALAVER_MODEL": SOURCE,  # pulled by gunicorn's master before its workers start
        "PALAVER_CACHE_DIR": str(tmp_path / "cache"),
        "PALAVER_API_KEYS": "key-one",
        "PALAVER_MAX_NEW_TOKENS": "4",
    }
    with procfile_server(env, wait_for="/healthz", timeout=120) as running:
        page = open_page(chromium, running.url)
        page.fill("#key", "key-one")
        page.click("#enter-key")
        page.goto(running.url + "/models")
        sync_api.expect(page.locator('#library tr[data-name="test/web-GGUF:Q4_0"]')).to_contain_text("served")
        published.open.clear()  # the download waits, so that the page shows it under way
        try:
            page.fill("#source", OTHER)
            page.click("#pull")
            pull = page.locator(f'.pull[data-source="{OTHER}"]')
            sync_api.expect(pull.locator(".pull-status")).to_contain_text("downloading tiny-Q8_0.gguf")
        finally:
            published.open.set()
        sync_api.expect(pull).to_have_attribute("data-status", "done", timeout=30000)
        bar = pull.locator("progress")
        assert bar.get_attribute("value") == bar.get_attribute("max") and int(pull.get_attribute("data-events")) >= 3
        sync_api.expect(page.locator('#library tr[data-name="test/web-GGUF:Q8_0"]')).to_contain_text("llama")
        page.context.close()
