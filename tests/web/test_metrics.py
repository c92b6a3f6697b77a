"""Prometheus metrics and the structured per-request log line."""

import json
import re


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_count_requests_tokens_and_timings(make_app, html_model):
    client = make_app(html_model, metrics=True).test_client()
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200
    assert client.post("/api/chat", json={"message": " "}).status_code == 400
    client.post("/", data={"textbox": "hi"})
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "palaver_requests_total", '{status="200",surface="api"}') == 1
    assert metric(text, "palaver_requests_total", '{status="400",surface="api"}') == 1
    assert metric(text, "palaver_requests_total", '{status="200",surface="page"}') == 1
    model = '{model="html-replier"}'
    assert metric(text, "palaver_generated_tokens_total", model) >= 6
    assert metric(text, "palaver_time_to_first_token_seconds_count", model) == 2
    steps = metric(text, "palaver_batch_size_count", model)
    assert steps >= 2 and metric(text, "palaver_batch_size_sum", model) == steps, "one at a time: batches of one"
    assert metric(text, "palaver_model_load_seconds", model) > 0
    assert metric(text, "palaver_queue_depth", model) == 0
    assert metric(text, "palaver_model_loaded", model) == 1 and metric(text, "palaver_model_loads", model) == 1


def request_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "palaver.requests"]


def test_each_request_logs_one_structured_line_without_message_text(make_app, html_model, caplog):
    caplog.set_level("INFO", logger="palaver.requests")
    client = make_app(html_model).test_client()
    response = client.post(
        "/v1/chat/completions",
        json={"model": "html-replier", "messages": [{"role": "user", "content": "a secret message"}], "stream": True},
    )
    response.get_data()
    response.close()
    [line] = request_lines(caplog)
    assert line["id"] == response.headers["X-Request-Id"] and line["surface"] == "openai"
    assert line["status"] == 200 and line["completion_tokens"] >= 3 and line["prompt_tokens"] > 0
    assert line["latency_ms"] >= 0 and "secret" not in json.dumps(line)


def test_message_text_is_logged_only_when_allowed(make_app, html_model, caplog):
    caplog.set_level("INFO", logger="palaver.requests")
    response = (
        make_app(html_model, log_messages=True).test_client().post("/api/chat", json={"message": "a secret message"})
    )
    response.close()
    assert "a secret message" in request_lines(caplog)[0]["body"]
