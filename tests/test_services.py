"""Web plumbing shared by every surface: SSE framing, API keys and the boundary's error translation."""

import pytest
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from errors import InvalidRequest, PayloadTooLarge
from services import has_valid_key, sse_event, to_palaver_error


def test_sse_events_are_one_data_line_and_a_blank_line():
    assert sse_event({"a": "é\nb"}) == 'data: {"a": "é\\nb"}\n\n'
    assert sse_event("[DONE]") == "data: [DONE]\n\n"


@pytest.mark.parametrize("candidate, valid", [("k1", True), ("k2", True), ("k3", False), ("", False),
                                              (None, False), ("k1 ", False)])
def test_only_configured_keys_are_valid(make_app, chat_model, candidate, valid):
    with make_app(chat_model, api_keys="k1, k2").test_request_context():
        assert has_valid_key(candidate) is valid


def test_exceptions_are_translated_once_at_the_boundary(app, caplog):
    with app.test_request_context():
        original = InvalidRequest("bad", param="x")
        assert to_palaver_error(original) is original
        assert isinstance(to_palaver_error(RequestEntityTooLarge()), PayloadTooLarge)
        assert to_palaver_error(MethodNotAllowed()).status == 405
        hidden = to_palaver_error(KeyError("internal name"))
        assert hidden.status == 500 and "internal name" not in hidden.message
        assert "internal name" in caplog.text
