"""JSON schemas that replies must follow: checked at the boundary, so the engine only ever gets one it can enforce."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from llguidance import LLMatcher
from pydantic import Field, field_validator, model_validator

from palaver.core.validation import RequestModel, body_error, field_error

if TYPE_CHECKING:  # the type exists only in the library's stubs
    from llguidance._lib import JsonCompileOptions

MAX_SCHEMA_BYTES = 16_384
MAX_SCHEMA_DEPTH = 16
# Compact JSON: no whitespace between tokens, so a reply can never run on in blank space until max_tokens.
COMPILE_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}
ANY_OBJECT = '{"type":"object"}'


def nesting(value: Any, most: int) -> int:
    """Return how deeply value's objects and arrays nest, counting no further than most + 1."""
    deepest, pending = 0, [(value, 1)]
    while pending:  # a loop, not recursion: a body may nest as deep as the JSON parser allowed
        item, depth = pending.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > most:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children)
    return deepest


def compact(schema: dict[str, Any]) -> str:
    """Return a checked schema as compact JSON with sorted keys: one text, one cache entry, per schema."""
    return json.dumps(schema, separators=(",", ":"), sort_keys=True, allow_nan=False)


def path_of(schema: Any, key: str, path: str = "#") -> str | None:
    """Return the JSON pointer of the first place schema uses key, or None."""
    if isinstance(schema, dict):
        if key in schema:
            return path
        items = schema.items()
    elif isinstance(schema, list):
        items = enumerate(schema)  # type: ignore[assignment]
    else:
        return None
    for name, child in items:
        found = path_of(child, key, f"{path}/{name}")
        if found is not None:
            return found
    return None


def canonical_schema(schema: Any) -> str:
    """Return schema as compact JSON, or raise a field error that names what cannot be enforced and where."""
    if not isinstance(schema, dict):
        raise field_error("must be a JSON object: a JSON schema")
    if nesting(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:  # before anything recurses into it
        raise field_error(f"must nest at most {MAX_SCHEMA_DEPTH} levels deep")
    try:
        text = compact(schema)
    except ValueError:
        raise field_error("must not hold NaN or Infinity") from None
    if len(text) > MAX_SCHEMA_BYTES:
        raise field_error(f"must be at most {MAX_SCHEMA_BYTES} bytes of JSON (got {len(text)})")
    problem = LLMatcher.validate_grammar(LLMatcher.grammar_from_json_schema(text, defaults=COMPILE_OPTIONS))
    if problem and not problem.startswith("WARNING"):
        raise field_error(explain(problem, schema))
    return text


def explain(problem: str, schema: dict) -> str:
    """Turn the grammar library's complaint into one that names the keyword and its path."""
    unimplemented = re.match(r"Unimplemented keys: \[(.*)\]", problem)
    if unimplemented:
        key = unimplemented.group(1).split(",")[0].strip().strip('"')
        return f"uses the keyword '{key}' at {path_of(schema, key) or '#'}, which Palaver cannot enforce"
    return f"cannot be enforced: {problem.splitlines()[0][:300]}"


class JsonSchemaFormat(RequestModel):
    """OpenAI's response_format.json_schema: a named schema."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The schema's name.")
    schema_: Any = Field(default_factory=dict, alias="schema", description="The JSON schema: an object.")
    strict: bool | None = Field(None, description="Always enforced here; accepted for OpenAI clients.")
    description: str | None = Field(None, max_length=1000)

    @field_validator("schema_")
    @classmethod
    def _enforceable(cls, schema: Any) -> Any:
        canonical_schema(schema)
        return schema


class ResponseFormat(RequestModel):
    """What a reply must be: text, any JSON object, or JSON that follows a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise body_error(
                "'response_format.json_schema' is required with type json_schema, and allowed only with it",
                param="response_format.json_schema",
            )
        return self

    def schema_text(self) -> str | None:
        """Return the schema the reply must follow as compact JSON, or None for plain text."""
        if self.type == "json_object":
            return ANY_OBJECT
        if self.json_schema is not None:
            return compact(self.json_schema.schema_)  # checked when the request was parsed
        return None
