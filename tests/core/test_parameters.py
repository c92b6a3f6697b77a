"""Generation parameters: types, ranges, and errors that name the field and the allowed range."""

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.parameters import Sampling


def defaults():
    return Settings(temperature=0.7).generation_defaults()


def overridden(values, from_text=False):
    return Sampling.parse(values, from_text=from_text).applied_to(defaults())


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", 1),
        ("max_new_tokens", 1024),
        ("max_new_tokens", 8.0),
        ("temperature", 0),
        ("temperature", 2),
        ("top_p", 1),
        ("top_p", 0.05),
        ("top_k", 0),
        ("repetition_penalty", 1.3),
        ("do_sample", False),
        ("seed", None),
        ("seed", 0),
        ("seed", 2**32 - 1),
    ],
)
def test_valid_parameters_are_accepted(field, value):
    params = overridden({field: value})
    assert getattr(params, field) == value


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("max_new_tokens", 0, "at least 1 and at most 1024"),
        ("max_new_tokens", 1025, "at most 1024"),
        ("max_new_tokens", 2.5, "an integer"),
        ("max_new_tokens", "8", "an integer"),
        ("max_new_tokens", True, "an integer"),
        ("temperature", -0.1, "at least 0.0"),
        ("temperature", 2.5, "at most 2.0"),
        ("temperature", "hot", "a finite number"),
        ("top_p", 0, "greater than 0.0"),
        ("top_p", 1.5, "at most 1.0"),
        ("top_k", -1, "at least 0"),
        ("repetition_penalty", 0.5, "at least 1.0"),
        ("do_sample", "yes", "true or false"),
        ("do_sample", 1, "true or false"),
        ("seed", -1, "at least 0"),
        ("seed", 2**32, "at most 4294967295"),
        ("temperature", float("nan"), "a finite number"),
        ("temperature", float("inf"), "at most 2.0"),
        ("top_p", float("nan"), "greater than 0.0"),
        ("repetition_penalty", float("-inf"), "at least 1.0"),
        ("max_new_tokens", float("nan"), "an integer"),
        ("top_k", float("inf"), "an integer"),
        ("temperature", 10**400, "at most 2.0"),
        ("max_new_tokens", -(10**400), "at least 1"),
    ],
)
def test_invalid_parameters_name_the_field_and_the_allowed_range(field, value, words):
    with pytest.raises(InvalidRequest) as caught:
        overridden({field: value})
    assert caught.value.param == field
    assert field in caught.value.message and words in caught.value.message


def test_unknown_fields_are_rejected_with_the_allowed_names():
    with pytest.raises(InvalidRequest) as caught:
        overridden({"temprature": 0.5})
    assert caught.value.param == "temprature"
    assert "temperature" in caught.value.message


def test_null_means_the_default():
    assert overridden({"temperature": None, "seed": None}) == defaults()


def test_form_values_are_parsed_from_text():
    params = overridden({"max_new_tokens": "12", "do_sample": "false", "top_p": "0.5"}, from_text=True)
    assert (params.max_new_tokens, params.do_sample, params.top_p) == (12, False, 0.5)
    with pytest.raises(InvalidRequest, match="max_new_tokens"):
        overridden({"max_new_tokens": "twelve"}, from_text=True)


@pytest.mark.parametrize(
    "field, text",
    [
        ("temperature", "nan"),
        ("temperature", "NaN"),
        ("top_p", "nan"),
        ("temperature", "inf"),
        ("repetition_penalty", "-Infinity"),
        ("max_new_tokens", "1e3"),
        ("seed", "9" * 5000),
    ],
)
def test_non_finite_and_malformed_form_values_are_refused_naming_the_field(field, text):
    with pytest.raises(InvalidRequest) as caught:
        overridden({field: text}, from_text=True)
    assert caught.value.param == field and f"'{field}'" in caught.value.message


def test_temperature_zero_or_no_sampling_means_greedy():
    assert overridden({"temperature": 0}).greedy
    assert overridden({"do_sample": False}).greedy
    assert not defaults().greedy


@pytest.mark.parametrize("value, expected", [("###", ("###",)), (["a", "b"], ("a", "b")), ([], ())])
def test_stop_takes_a_string_or_a_short_list(value, expected):
    assert overridden({"stop": value}).stop == expected


@pytest.mark.parametrize("value", [["a"] * 5, [""], [1], {"a": 1}, "x" * 101])
def test_bad_stop_values_are_rejected(value):
    with pytest.raises(InvalidRequest, match="at most 4 non-empty strings"):
        overridden({"stop": value})
