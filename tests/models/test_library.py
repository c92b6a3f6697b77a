"""The library's records: found by name or source, written whole, removed with the files no other record has."""

import pytest
from fake_hub import variant

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models import library
from palaver.models.pulling import pull


@pytest.fixture(scope="module")
def tiny(gguf_chat_model) -> bytes:
    return gguf_chat_model.read_bytes()


def test_models_are_found_by_name_or_source_and_removed_with_only_the_files_no_other_has(hub, hub_home, tiny):
    hub.publish("test/library-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    by_quantisation = pull(HubSource.parse("hf:test/library-GGUF:Q4_0"), hub_home)
    by_file = pull(HubSource.parse("hf:test/library-GGUF/tiny-Q4_0.gguf"), hub_home)
    other = pull(HubSource.parse("hf:test/library-GGUF:Q8_0"), hub_home)
    assert by_file.paths == by_quantisation.paths, "two sources, one file: fetched once, recorded twice"
    assert [m.name for m in library.all_pulled(hub_home)] == ["test/library-GGUF:Q4_0", "test/library-GGUF:Q8_0",
                                                             "tiny-Q4_0"]  # fmt: skip
    assert library.named(hub_home, "tiny-Q4_0") == by_file
    assert library.named(hub_home, "hf:test/library-GGUF@main:Q8_0") == other, "a source, however written"
    with pytest.raises(ConfigurationError, match="no pulled model is named gone; pulled: test/library-GGUF:Q4_0"):
        library.named(hub_home, "gone")
    library.remove(hub_home, by_quantisation)
    assert by_file.present(), "the file stays while another record has it"
    library.remove(hub_home, by_file)
    blobs = by_file.paths[0].parents[2] / "blobs"
    assert not by_file.paths[0].exists() and len(list(blobs.iterdir())) == 1 and other.present()
    assert [m.name for m in library.all_pulled(hub_home)] == ["test/library-GGUF:Q8_0"]


def test_a_record_half_written_by_hand_is_no_pulled_model(hub_home):
    folder = library.library_dir(hub_home)
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text('{"source": "hf:a/b:Q4_0"')
    assert library.all_pulled(hub_home) == []
    assert library.find(hub_home, HubSource.parse("hf:a/b:Q4_0")) is None
