"""bench.engines' table of each server beside llama-server, from load results."""

from bench.engines import beside


def result(tokens_per_s: float, p95: float, rss: float) -> dict:
    return {"tokens_per_s": tokens_per_s, "p95": p95, "peak_rss_mb": rss}


def test_each_server_is_given_beside_llama_server_at_each_load():
    rows = [
        ("palaver-fast", "1", result(150.0, 0.2, 300)),
        ("palaver-fast", "16", result(250.0, 1.0, 480)),
        ("palaver-fast", "8 + 2 CPU hogs", result(1.0, 9.0, 999)),  # not a load level of its own
        ("palaver-fast", "16", result(2.0, 9.0, 999)),  # the hogs' quiet run at a count the loads ran: not theirs
        ("palaver", "1", result(80.0, 0.4, 250)),
        ("llama-server", "1", result(100.0, 0.5, 860)),
        ("llama-server", "16", result(125.0, 2.5, 920)),
        ("palaver-512MB", "32", result(300.0, 3.0, 370)),  # only at a load llama-server did not run: left out
    ]
    assert beside(rows) == [
        "| server | 1 client | 16 clients | peak RSS MB |",
        "|---|---|---|---|",
        "| palaver-fast | 150.0 (1.50×) | 250.0 (2.00×; p95 0.40×) | 300 / 480 |",
        "| palaver | 80.0 (0.80×) | - | 250 / 250 |",
        "| llama-server | 100.0 | 125.0 | 860 / 920 |",
    ]


def test_without_llama_server_there_is_nothing_to_compare():
    assert beside([("palaver", "1", result(80.0, 0.4, 250))]) == []
