"""Ollama's /api/pull, driven by the official ollama client: a GGUF file from a local Hub, its progress in lines."""

import queue
import threading

import httpx
import ollama
import pytest
from fake_hub import variant

KEY = "key-one"


@pytest.fixture
def keyed_client(make_app, gguf_chat_model, hub, hub_home):
    """The official client on a keyed app in this process (its WSGI app behind httpx), the local Hub beside it."""
    tiny = gguf_chat_model.read_bytes()
    hub.publish("test/ollama-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    app = make_app(gguf_chat_model, api_keys=KEY)
    transport = httpx.WSGITransport(app=app)
    return ollama.Client(host="http://palaver/ollama", headers={"Authorization": f"Bearer {KEY}"}, transport=transport)


def test_a_pull_streams_the_manifest_the_files_bytes_the_check_and_success(keyed_client, gguf_chat_model):
    parts = list(keyed_client.pull("hf.co/test/ollama-GGUF:Q4_0", stream=True))
    statuses = [part.status for part in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    downloads = [part for part in parts if part.digest]
    size = gguf_chat_model.stat().st_size
    assert downloads and downloads[-1].completed == downloads[-1].total == size
    assert downloads[0].status == f"pulling {downloads[0].digest.removeprefix('sha256:')[:12]}"
    assert keyed_client.pull("hf:test/ollama-GGUF:Q8_0").status == "success", "whole, once done"


def test_a_pull_that_cannot_be_had_is_an_error_and_one_not_on_the_hub_a_400(keyed_client):
    with pytest.raises(ollama.ResponseError, match="the Hub has no repository test/absent"):
        list(keyed_client.pull("hf.co/test/absent:Q4_0", stream=True))
    with pytest.raises(ollama.ResponseError) as caught:
        keyed_client.pull("hf.co/test/ollama-GGUF:Q4_0", insecure=True)
    assert caught.value.status_code == 400 and "insecure" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        keyed_client.pull("qwen3:0.6b")
    assert caught.value.status_code == 400 and "hf.co/OWNER/REPO:QUANT" in caught.value.error


def test_without_api_keys_pulling_is_refused(make_app, gguf_chat_model):
    client = ollama.Client(host="http://palaver/ollama", transport=httpx.WSGITransport(app=make_app(gguf_chat_model)))
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("hf.co/test/ollama-GGUF:Q4_0")
    assert caught.value.status_code == 403 and "PALAVER_API_KEYS" in caught.value.error


def test_a_files_bytes_that_end_between_two_looks_are_still_said_whole_before_the_check():
    from palaver.models.progress import Progress
    from palaver.web.ollama.pull import progress_lines

    first, second = "ab" * 32, "cd" * 32
    progress = Progress("hf:test/repo")
    progress.set(status="downloading", sha256=first, total=100, completed=0)
    said: queue.Queue = queue.Queue()
    # The lines are followed as a client follows them, on their own thread: a line that never comes fails the test.
    threading.Thread(target=lambda: [said.put(line) for line in progress_lines(progress)], daemon=True).start()

    def next_lines(count: int) -> list[dict]:
        return [said.get(timeout=10) for _ in range(count)]

    try:
        assert [line.get("completed") for line in next_lines(2)] == [None, 0]  # the manifest, then the first file
        progress.set(sha256=second, total=50, completed=10)  # the next file began: the first one was whole
        assert [line["completed"] for line in next_lines(2)] == [100, 10]
        progress.set(status="verifying", completed=50)  # its last bytes came unseen
        whole = {"status": f"pulling {second[:12]}", "digest": f"sha256:{second}", "total": 50, "completed": 50}
        assert next_lines(2) == [whole, {"status": "verifying sha256 digest"}]
        progress.set(status="done", name="repo")
        assert [line["status"] for line in next_lines(2)] == ["writing manifest", "success"]
    finally:
        progress.set(status="done")  # the follower's thread ends whatever was said
    unseen = Progress("hf:test/repo")  # the whole download happened before anyone looked
    unseen.set(status="done", sha256=first, total=100, completed=100, name="repo")
    statuses = [line["status"] for line in progress_lines(unseen)]
    assert statuses == [
        "pulling manifest",
        f"pulling {first[:12]}",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
