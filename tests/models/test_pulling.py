"""Pulling, against a local Hub: fetched once, checked and recorded; served offline from the cache; split models
fetched whole; two processes starting at once downloading once."""

import os
import subprocess

import pytest
from commands import PALAVER
from fake_hub import hub_env, variant
from timing import budget, wait_until

from app import create_app
from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models import library
from palaver.models.progress import Progress
from palaver.models.pulling import ensure, locate, pull


@pytest.fixture(scope="module")
def tiny(gguf_chat_model) -> bytes:
    return gguf_chat_model.read_bytes()


def test_a_pull_is_recorded_kept_while_its_revision_stays_and_replaced_when_it_moves(hub, hub_home, tiny):
    first = hub.publish("test/pull-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    source = HubSource.parse("hf:test/pull-GGUF:Q4_0")
    progress = Progress(str(source))
    model = pull(source, hub_home, progress)
    assert (model.name, model.commit, model.quantisation) == ("test/pull-GGUF:Q4_0", first, "Q4_0")
    assert locate(str(source), hub_home).read_bytes() == tiny and progress.state.status == "done"
    again = pull(source, hub_home)
    assert again.commit == first and again.last_used >= model.last_used
    assert hub.downloads["test/pull-GGUF/tiny-Q4_0.gguf"] == 1, "pulled once: the record says it is there"
    moved = hub.publish("test/pull-GGUF", {"tiny-Q4_0.gguf": variant(tiny, 2)})
    newer = pull(source, hub_home)
    assert newer.commit == moved and locate(str(source), hub_home).read_bytes() == variant(tiny, 2)
    assert not model.paths[0].exists(), "the commit it replaced is gone from the cache"
    assert [m.source for m in library.all_pulled(hub_home)] == [str(source)]


def test_a_split_model_is_fetched_whole_and_refused_saying_how_to_merge_it(hub, hub_home, tiny):
    parts = {f"split/tiny-Q4_0-0000{n}-of-00002.gguf": variant(tiny, n) for n in (1, 2)}
    hub.publish("test/split-GGUF", parts)
    model = pull(HubSource.parse("hf:test/split-GGUF:Q4_0"), hub_home)
    assert [p.read_bytes() for p in model.paths] == list(parts.values())
    with pytest.raises(ConfigurationError, match="split into 2 files.*llama-gguf-split --merge"):
        locate("hf:test/split-GGUF:Q4_0", hub_home)


def test_offline_a_pulled_model_starts_from_the_cache_and_one_never_pulled_says_how(hub, hub_home, tiny, monkeypatch):
    hub.publish("test/offline-GGUF", {"tiny-Q4_0.gguf": tiny})
    pull(HubSource.parse("hf:test/offline-GGUF:Q4_0"), hub_home)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = hub.listings
    settings = Settings(model="hf:test/offline-GGUF:Q4_0", cache_dir=str(hub_home), max_new_tokens=4, temperature=0)
    app = create_app({"TESTING": True, "SETTINGS": settings})
    try:
        asked_for = {"model": "test/offline-GGUF:Q4_0", "prompt": "Hello", "max_tokens": 3}
        reply = app.test_client().post("/v1/completions", json=asked_for)
        described = app.extensions["palaver"].backend.describe()
    finally:
        app.extensions["palaver"].close()
    assert reply.status_code == 200 and reply.json["usage"]["completion_tokens"] == 3, reply.json
    assert reply.json["model"] == "test/offline-GGUF:Q4_0" and described["engine"] == "native"
    assert hub.listings == asked, "offline, the Hub was not asked"
    with pytest.raises(ConfigurationError, match=r"run `palaver pull hf:test/offline-GGUF:Q8_0` where the Hub"):
        ensure("hf:test/offline-GGUF:Q8_0", hub_home)


def test_two_processes_pulling_at_once_download_once(hub, tmp_path, tiny):
    hub.publish("test/twice-GGUF", {"tiny-Q4_0.gguf": tiny})
    env = {**os.environ, **hub_env(hub, tmp_path / "hf"), "PALAVER_CACHE_DIR": str(tmp_path / "cache")}
    hub.open.clear()  # both ask for the file's listing; the first to download waits, holding the file's lock
    listed = hub.listings
    pulls = [
        subprocess.Popen([str(PALAVER), "pull", "hf:test/twice-GGUF:Q4_0"], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        wait_until(lambda: hub.listings == listed + 2, timeout=60, what="both pulls listing the repository")
    finally:
        hub.open.set()
    ended = [p.communicate(timeout=budget(60)) for p in pulls]
    assert [p.returncode for p in pulls] == [0, 0], ended
    assert hub.downloads["test/twice-GGUF/tiny-Q4_0.gguf"] == 1
