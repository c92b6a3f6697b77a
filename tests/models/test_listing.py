"""The library as listed: what each pulled file is and whether the native step serves it; the suggested models."""

import pytest
from fake_hub import variant

from palaver.core.config import Settings
from palaver.core.hub_sources import HubSource
from palaver.models.choosing import DEFAULT_QUANTISATION
from palaver.models.listing import SUGGESTED, library_rows
from palaver.models.pulling import pull


def test_each_pulled_model_is_listed_with_its_file_its_architecture_and_how_it_is_served(
    hub, hub_home, gguf_chat_model
):
    tiny = gguf_chat_model.read_bytes()
    parts = {f"tiny-Q8_0-0000{n}-of-00002.gguf": variant(tiny, n) for n in (1, 2)}
    hub.publish("test/listing-GGUF", {"tiny-Q4_0.gguf": tiny, **parts})
    pull(HubSource.parse("hf:test/listing-GGUF:Q4_0"), hub_home)
    pull(HubSource.parse("hf:test/listing-GGUF:Q8_0"), hub_home)
    native, split = library_rows(Settings(cache_dir=str(hub_home)))
    assert (native.name, native.quantisation, native.architecture, native.native) == (
        "test/listing-GGUF:Q4_0", "Q4_0", "llama", "yes"
    )  # fmt: skip
    assert native.disk_bytes == len(tiny) and native.last_used > 0
    assert split.disk_bytes == sum(map(len, parts.values())) and split.native.startswith("no: split into 2 files")
    [transformers] = library_rows(Settings(cache_dir=str(hub_home), engine="transformers"))[:1]
    assert transformers.native == "no: PALAVER_ENGINE=transformers"


@pytest.mark.parametrize("suggestion", SUGGESTED, ids=lambda s: s.title)
def test_each_suggested_model_is_a_hub_source_of_the_default_quantisation(suggestion):
    assert HubSource.parse(suggestion.source).quantisation == DEFAULT_QUANTISATION
