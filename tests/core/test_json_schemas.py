"""Schemas checked at the boundary: what cannot be enforced is named with its path; size, depth and NaN bounded."""

import pytest

from palaver.core.json_schemas import (
    MAX_NESTED_REPEATS,
    MAX_OPTIONAL_PROPERTIES,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    ResponseFormat,
    canonical_schema,
    path_of,
    repeats,
)
from palaver.core.validation import RequestModel


class Holder(RequestModel):
    response_format: ResponseFormat


def refusal(schema) -> str:
    from palaver.core.errors import InvalidRequest

    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    with pytest.raises(InvalidRequest) as caught:
        Holder.parse(body)
    assert caught.value.param == "response_format.json_schema.schema"
    return caught.value.message


def test_enforceable_schemas_come_back_as_compact_json_in_the_schemas_own_order():
    assert canonical_schema({"type": "object", "required": ["b"], "properties": {"b": {"enum": ["x", "é"]}}}) == (
        '{"type":"object","required":["b"],"properties":{"b":{"enum":["x","\\u00e9"]}}}'
    )
    assert canonical_schema({"properties": {"reasoning": {}, "answer": {}}}) == (
        '{"properties":{"reasoning":{},"answer":{}}}'
    ), "a reply writes properties in the order the schema gives them"
    assert canonical_schema({}) == "{}"


def test_nested_counted_repeats_are_refused_naming_the_pattern_and_single_ones_are_not():
    message = refusal({"type": "string", "pattern": "^(x{1,100}){1,100}y$"})
    assert "#/pattern" in message and "10000" in message and str(MAX_NESTED_REPEATS) in message
    tagged = {"type": "object", "patternProperties": {"^(a|b{1,50}){1,50}$": {}}}
    assert "#/patternProperties" in refusal(tagged)
    assert repeats("^[a-z]{1,5000}$") == 0 and repeats("^(x{1,40}){1,25}$") == 1000 and repeats("(unclosed") == 0
    assert repeats("((a{2}){3}){4}") == 24 and repeats("(x+)+") == 0
    assert canonical_schema({"const": {"pattern": "(x{1,100}){1,100}"}}), "a value is no pattern"


def test_optional_properties_are_bounded_in_all_and_required_ones_are_not():
    wide = {"type": "object", "properties": {f"p{index}": {"type": "integer"} for index in range(600)}}
    assert canonical_schema(wide)
    names = [f"{index:x}" for index in range(MAX_OPTIONAL_PROPERTIES + 1)]
    too_wide = {"type": "object", "properties": {name: {} for name in names}}
    assert f"at most {MAX_OPTIONAL_PROPERTIES} optional properties" in refusal(too_wide)
    assert canonical_schema({**too_wide, "required": names})


def test_unenforceable_keywords_are_named_with_their_json_pointer():
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"contains": {"const": 1}}}}}
    assert "'contains' at #/properties/tags/items" in refusal(schema)
    assert "'if' at #" in refusal({"if": {"type": "string"}, "then": {"maxLength": 2}})
    assert "Unknown format" in refusal({"type": "string", "format": "bogus"})
    assert path_of({"a": [{"b": {"k": 1}}]}, "k") == "#/a/0/b" and path_of({"a": 1}, "k") is None


def test_huge_deep_or_non_finite_schemas_are_refused():
    huge = {"enum": ["x" * 100] * (MAX_SCHEMA_BYTES // 100)}
    assert f"at most {MAX_SCHEMA_BYTES} bytes" in refusal(huge)
    deep: dict = {"type": "object"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "object", "properties": {"a": deep}}
    assert f"at most {MAX_SCHEMA_DEPTH} levels deep" in refusal(deep)
    assert "must be a JSON object" in refusal(["not", "a", "schema"])
    as_deep_as_a_body_may_nest: dict = {}
    for _ in range(900):
        as_deep_as_a_body_may_nest = {"items": as_deep_as_a_body_may_nest}
    assert f"at most {MAX_SCHEMA_DEPTH} levels deep" in refusal(as_deep_as_a_body_may_nest)
    assert "NaN" in refusal({"type": "number", "maximum": float("nan")})
