"""Pulls started from the web: in the background, one per source at a time, a few at once, ending as they end."""

import pytest

from palaver.core.errors import ConfigurationError, ServerBusy
from palaver.models.pulls import Pulls


def test_a_pull_runs_in_the_background_and_a_second_for_its_source_follows_it(hub, hub_home, gguf_chat_model):
    hub.publish("test/pulls-GGUF", {"tiny-Q4_0.gguf": gguf_chat_model.read_bytes()})
    pulls = Pulls(hub_home, limit=1)
    hub.open.clear()  # the download waits: the pull is running while the others are asked for
    try:
        first = pulls.start("hf:test/pulls-GGUF:Q4_0")
        assert pulls.start("hf:test/pulls-GGUF@main:Q4_0") is first, "the same source, written otherwise: one pull"
        with pytest.raises(ServerBusy, match="1 models are being pulled"):
            pulls.start("hf:test/pulls-GGUF/tiny-Q4_0.gguf")
    finally:
        hub.open.set()
    assert list(first.follow())[-1].status == "done"
    failed = pulls.start("hf:test/absent-GGUF:Q4_0")  # the first has ended: room for another
    last = list(failed.follow())[-1]
    assert last.status == "failed" and "the Hub has no repository test/absent-GGUF" in last.error
    assert [s.status for s in pulls.states()] == ["done", "failed"]
    with pytest.raises(ConfigurationError, match="is not a Hub source"):
        pulls.start("qwen3")
