"""The translation of request-model errors: the field named as clients write it, and the allowed values."""

from typing import Literal

import pytest
from pydantic import Field, field_validator

from palaver.core.errors import InvalidRequest
from palaver.core.validation import RequestModel, body_error, field_error, unsupported


class Part(RequestModel):
    kind: Literal["text", "image"]
    size: int = Field(0, ge=0, le=10)


class Body(RequestModel):
    name: str = Field(min_length=1, max_length=8)
    ratio: float | None = Field(None, gt=0.0, le=1.0)
    flag: bool = False
    parts: list[Part] = []
    mode: str | None = None
    legacy: int | None = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, mode: str) -> str:
        if mode == "bad":
            raise field_error("must not be bad")
        if mode == "whole":
            raise body_error("the body as a whole is wrong")
        return mode

    @field_validator("legacy")
    @classmethod
    def _legacy(cls, legacy: int) -> int:
        if legacy != 0:
            raise unsupported("legacy is not supported")
        return legacy


@pytest.mark.parametrize(
    "body, param, message",
    [
        ({}, "name", "'name' is required"),
        ({"name": ""}, "name", "'name' must be a string of 1 to 8 characters"),
        ({"name": "a", "ratio": 0}, "ratio", "'ratio' must be a finite number greater than 0.0 and at most 1.0"),
        ({"name": "a", "ratio": float("nan")}, "ratio", "'ratio' must be a finite number greater than 0.0"),
        ({"name": "a", "ratio": "0.5"}, "ratio", "'ratio' must be a finite number"),
        ({"name": "a", "flag": 1}, "flag", "'flag' must be true or false"),
        ({"name": "a", "parts": [{"kind": "x"}]}, "parts[0].kind", "'parts[0].kind' must be one of text, image"),
        (
            {"name": "a", "parts": [{"kind": "text", "size": 11}]},
            "parts[0].size",
            "an integer at least 0 and at most 10",
        ),
        ({"name": "a", "parts": [3]}, "parts[0]", "'parts[0]' must be an object with the fields kind, size"),
        (
            {"name": "a", "parts": [{"kind": "text", "x": 1}]},
            "parts[0].x",
            "unknown field 'x'; accepted fields are kind, size",
        ),
        ({"name": "a", "other": 1}, "other", "unknown field 'other'; accepted fields are name, ratio"),
        ({"name": "a", "mode": "bad"}, "mode", "'mode' must not be bad"),
        ({"name": "a", "mode": "whole"}, None, "the body as a whole is wrong"),
    ],
)
def test_errors_name_the_field_and_what_it_accepts(body, param, message):
    with pytest.raises(InvalidRequest) as caught:
        Body.parse(body)
    assert caught.value.param == param and message in caught.value.message and caught.value.code is None


def test_unsupported_values_carry_their_code():
    with pytest.raises(InvalidRequest) as caught:
        Body.parse({"name": "a", "legacy": 2})
    assert (caught.value.param, caught.value.code, caught.value.message) == (
        "legacy",
        "unsupported_parameter",
        "legacy is not supported",
    )


def test_null_means_not_given_and_text_is_read_only_from_forms():
    assert Body.parse({"name": "a", "ratio": None, "flag": None}).flag is False
    assert Body.parse({"name": "a", "ratio": "0.5", "flag": "yes"}, from_text=True).ratio == 0.5


@pytest.mark.parametrize("body", [[], "x", 3, None])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        Body.parse(body)
