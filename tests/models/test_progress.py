"""A pull's progress: changed by the pull's thread, followed by others until it ends, and logged by tenths."""

import logging

from palaver.models.progress import Progress


def test_a_follower_hears_the_latest_state_after_each_change_or_heartbeat_until_the_pull_ends():
    progress = Progress("hf:o/r:Q4_0")
    heard = progress.follow(heartbeat=0.01)
    assert next(heard).status == "resolving"
    progress.set(status="downloading", file="r-Q4_0.gguf", total=100)
    progress.advance(60)
    assert next(heard).completed == 60, "changes between two looks are heard as the latest state"
    assert next(heard).completed == 60, "without a change, the heartbeat tells the same state again"
    progress.advance(-10)  # a server that ignored a resumed range sent all again: the count goes back
    assert next(heard).completed == 50
    progress.fail("the Hub cannot be reached")
    assert next(heard).error == "the Hub cannot be reached" and next(heard, None) is None
    assert [state.status for state in progress.follow()] == ["failed"], "an ended pull is heard once, at once"


def test_the_download_bar_reports_here_and_the_log_says_each_tenth(caplog):
    progress = Progress("hf:o/r:Q4_0")
    with caplog.at_level(logging.INFO, logger="palaver.models"):  # the start's line too, at 0.0 MB
        progress.set(status="downloading", file="r-Q4_0.gguf", total=10_000_000)
        bar = progress.bar_class()(total=10_000_000, desc="r-Q4_0.gguf")
        for _ in range(40):
            bar.update(250_000)
        bar.close()
    assert progress.state.completed == 10_000_000
    steps = [r.getMessage() for r in caplog.records if "r-Q4_0.gguf" in r.getMessage()]
    assert len(steps) == 11 and steps[-1] == "pulling r-Q4_0.gguf: downloading, 10.0 of 10.0 MB", steps
