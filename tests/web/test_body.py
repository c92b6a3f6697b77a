"""Request bodies: NaN, Infinity and lone surrogates refused anywhere in a JSON body, naming the field."""

import json

import pytest

from palaver.core.errors import InvalidRequest
from palaver.web.body import check_json_values


@pytest.mark.parametrize(
    "text, field",
    [
        ('{"temperature": NaN}', "'temperature'"),
        ('{"params": {"top_p": Infinity}}', "'params.top_p'"),
        ('{"messages": [{"content": "ok"}, {"content": "\\ud800"}]}', "'messages[1].content'"),
        ("-Infinity", "'body'"),
    ],
)
def test_a_bad_value_anywhere_is_refused_naming_its_place(text, field):
    with pytest.raises(InvalidRequest) as refused:
        check_json_values(json.loads(text))
    assert field in refused.value.message


def test_a_bad_field_name_and_a_deep_body_are_handled_without_recursion():
    with pytest.raises(InvalidRequest, match="field names"):
        check_json_values(json.loads('{"\\udfff": 1}'))
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    check_json_values(deep)  # no RecursionError: the walk is a loop
    check_json_values({"fine": [1, 2.5, "text", None, True]})
