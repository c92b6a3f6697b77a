"""The Hub through huggingface_hub, against a local Hub: a source's commit and files, downloads resumed and checked."""

import hashlib

import pytest
from fake_hub import variant

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models import hub as hub_api
from palaver.models.hub import ChecksumMismatch, HubUnreachable, download, resolve, snapshot_path

MIB = 1 << 20


@pytest.fixture(scope="module")
def tiny(gguf_chat_model) -> bytes:
    return gguf_chat_model.read_bytes()


def test_a_source_resolves_to_its_revisions_commit_and_the_file_its_quantisation_names(hub, hub_home, tiny):
    first = hub.publish("test/resolve-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    tagged = hub.publish("test/resolve-GGUF", {"tiny-Q8_0.gguf": variant(tiny, 2)}, revision="v2")
    commit, choice = resolve(HubSource.parse("hf:test/resolve-GGUF:q8_0"))
    assert commit == first and [f.path for f in choice.files] == ["tiny-Q8_0.gguf"]
    assert choice.files[0].sha256 == hashlib.sha256(variant(tiny, 1)).hexdigest() and choice.quantisation == "Q8_0"
    commit, choice = resolve(HubSource.parse("hf:test/resolve-GGUF@v2/tiny-Q8_0.gguf"))
    assert commit == tagged and choice.files[0].size == len(variant(tiny, 2))
    assert resolve(HubSource.parse(f"hf:test/resolve-GGUF@{first}:Q4_0"))[0] == first, "a commit is a revision too"
    with pytest.raises(ConfigurationError, match="has no revision v3"):
        resolve(HubSource.parse("hf:test/resolve-GGUF@v3:Q4_0"))
    with pytest.raises(ConfigurationError, match="the Hub has no repository test/absent"):
        resolve(HubSource.parse("hf:test/absent:Q4_0"))


def test_a_download_cut_short_resumes_where_it_stopped_and_is_checked(hub, hub_home, tiny):
    big = variant(tiny, 12 * MIB // 32)  # past huggingface_hub's 10 MiB chunk: the first chunk is kept on a cut
    hub.publish("test/resume-GGUF", {"big-Q4_0.gguf": big})
    source = HubSource.parse("hf:test/resume-GGUF:Q4_0")
    commit, choice = resolve(source)
    hub.cut_once["test/resume-GGUF/big-Q4_0.gguf"] = 11 * MIB
    path = download(source, commit, choice.files[0], None)
    hub_api.check(source, path, choice.files[0])
    assert path == snapshot_path("test/resume-GGUF", commit, "big-Q4_0.gguf") and path.read_bytes() == big
    assert hub.downloads["test/resume-GGUF/big-Q4_0.gguf"] == 2 and hub.ranges == [f"bytes={10 * MIB}-"]


def test_a_file_whose_bytes_are_not_those_listed_is_refused_and_removed(hub, hub_home, tiny):
    hub.publish("test/altered-GGUF", {"tiny-Q4_0.gguf": tiny})
    hub.altered.add("test/altered-GGUF/tiny-Q4_0.gguf")
    source = HubSource.parse("hf:test/altered-GGUF:Q4_0")
    commit, choice = resolve(source)
    path = download(source, commit, choice.files[0], None)
    with pytest.raises(ChecksumMismatch, match="not the .* the Hub lists; the download was removed: pull again"):
        hub_api.check(source, path, choice.files[0])
    repo_dir = snapshot_path("test/altered-GGUF", commit, "x").parents[2]
    assert not path.exists() and list((repo_dir / "blobs").iterdir()) == [], "neither the link nor the blob is left"


def test_a_hub_that_cannot_be_asked_is_told_apart_from_a_wrong_source(hub, hub_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hits = hub.listings
    with pytest.raises(HubUnreachable, match="HF_HUB_OFFLINE is set"):
        resolve(HubSource.parse("hf:test/resolve-GGUF:Q4_0"))
    assert hub.listings == hits, "offline, the Hub is not asked"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing answers there
    with pytest.raises(HubUnreachable, match="the Hub cannot be reached"):
        resolve(HubSource.parse("hf:test/resolve-GGUF:Q4_0"))
