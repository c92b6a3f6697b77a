"""Web plumbing shared by every surface: SSE framing and the boundary's error translation."""

from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from palaver.errors import InvalidRequest, PayloadTooLarge
from palaver.web.boundary import sse_event, to_palaver_error


def test_sse_events_are_one_data_line_and_a_blank_line():
    assert sse_event({"a": "é\nb"}) == 'data: {"a": "é\\nb"}\n\n'
    assert sse_event("[DONE]") == "data: [DONE]\n\n"


def test_exceptions_are_translated_once_at_the_boundary(app, caplog):
    with app.test_request_context():
        original = InvalidRequest("bad", param="x")
        assert to_palaver_error(original) is original
        assert isinstance(to_palaver_error(RequestEntityTooLarge()), PayloadTooLarge)
        assert to_palaver_error(MethodNotAllowed()).status == 405
        hidden = to_palaver_error(KeyError("internal name"))
        assert hidden.status == 500 and "internal name" not in hidden.message
        assert "internal name" in caplog.text
