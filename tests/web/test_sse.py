"""Web plumbing shared by every surface: SSE framing and the boundary's error translation."""

from palaver.web.sse import sse_event


def test_sse_events_are_one_data_line_and_a_blank_line():
    assert sse_event({"a": "é\nb"}) == 'data: {"a": "é\\nb"}\n\n'
    assert sse_event("[DONE]") == "data: [DONE]\n\n"


def test_a_named_event_carries_its_name_before_its_data():
    assert sse_event({"type": "ping"}, "ping") == 'event: ping\ndata: {"type": "ping"}\n\n'
