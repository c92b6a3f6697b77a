"""Client-facing errors: status, type and the JSON envelope."""

from palaver.core.errors import GenerationTimeout, InvalidRequest, ModelNotReady, NotFound, PayloadTooLarge


def test_errors_carry_status_type_and_param():
    cases = [
        (InvalidRequest, 400),
        (NotFound, 404),
        (PayloadTooLarge, 413),
        (ModelNotReady, 503),
        (GenerationTimeout, 504),
    ]
    for error_class, status in cases:
        error = error_class("what went wrong", param="field")
        assert error.status == status
        assert error.as_dict() == {
            "error": {"message": "what went wrong", "type": error.type, "param": "field", "code": None}
        }


def test_retry_after_is_kept_for_the_response_header():
    assert ModelNotReady("loading", retry_after=5).retry_after == 5


def test_a_code_can_name_the_error_precisely():
    error = InvalidRequest("too long", param="prompt", code="context_length_exceeded")
    assert error.as_dict()["error"]["code"] == "context_length_exceeded"
