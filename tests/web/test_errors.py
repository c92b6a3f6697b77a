"""Errors at the web boundary: every exception translated once into a client-safe error."""

from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from palaver.core.errors import InvalidRequest, PayloadTooLarge
from palaver.web.errors import to_palaver_error


def test_exceptions_are_translated_once_at_the_boundary(app, caplog):
    with app.test_request_context():
        original = InvalidRequest("bad", param="x")
        assert to_palaver_error(original) is original
        assert isinstance(to_palaver_error(RequestEntityTooLarge()), PayloadTooLarge)
        assert to_palaver_error(MethodNotAllowed()).status == 405
        hidden = to_palaver_error(KeyError("internal name"))
        assert hidden.status == 500 and "internal name" not in hidden.message
        assert "internal name" in caplog.text
