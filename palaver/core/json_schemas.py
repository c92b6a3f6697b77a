"""JSON schemas that replies must follow: checked at the boundary, so the engine only ever gets one it can enforce."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from re import _constants as sre_constants  # type: ignore[attr-defined]  # the parser re itself uses
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Literal

from llguidance import LLMatcher, LLParserLimits
from pydantic import Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from palaver.core.validation import RequestModel, body_error, field_error

if TYPE_CHECKING:  # the type exists only in the library's stubs
    from llguidance._lib import JsonCompileOptions

MAX_SCHEMA_BYTES = 16_384
MAX_SCHEMA_DEPTH = 16
# Each optional property is a branch the parser keeps open at every step of its object (about 4 items a
# property): the bound keeps a step's mask within milliseconds, and within the parser limits below.
MAX_OPTIONAL_PROPERTIES = 1_000
# Counted repeats nested in counted repeats multiply the lexer's states: (x{1,100}){1,100} runs the lexer out
# of fuel mid-reply. RE2 refuses repeat counts past 1,000 for the same reason.
MAX_NESTED_REPEATS = 1_000
# Compact JSON: no whitespace between tokens, so a reply can never run on in blank space until max_tokens.
COMPILE_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}
# One set of limits wherever a grammar is built, at the boundary and in the engine, so what the boundary
# accepts the engine can hold. Rows wide enough for MAX_OPTIONAL_PROPERTIES; no grammar or schema text in
# the library's error messages, which reach the log and the client.
ROW_ITEMS = 10_000
PARSER_LIMITS = LLParserLimits(max_items_in_row=ROW_ITEMS, verbose_errors=False)
NOT_SCHEMAS = ("const", "enum", "default", "examples")  # values, not schemas: nothing in them is enforced
ANY_OBJECT = '{"type":"object"}'
SCHEMA_PARAM = "response_format.json_schema.schema"


@dataclass(frozen=True)
class Grammar:
    """What a reply must follow, built and checked where its request came in, for a backend to compile once."""

    text: str  # the grammar library's grammar, from a JSON schema or Lark: no tokenizer needed to build it
    param: str  # the request field it came from, which an error enforcing it names


def schema_grammar(schema: str) -> str:
    """Return the grammar for a JSON schema written as compact JSON: no whitespace a reply could run on in."""
    return LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)


def grammar_problem(grammar: str) -> str | None:
    """Return why the grammar library cannot enforce a built grammar, or None when it can."""
    problem = LLMatcher.validate_grammar(grammar, limits=PARSER_LIMITS)
    return problem if problem and not problem.startswith("WARNING") else None


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
    """Return a checked schema as compact JSON, keys in the schema's order: a reply writes properties in it."""
    return json.dumps(schema, separators=(",", ":"), allow_nan=False)


def subschemas(schema: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield each object in schema with its JSON pointer, leaving out values (const, enum) that hold no schema."""
    pending = [(path, schema)]
    while pending:  # a loop: depth is bounded before this runs, but a loop costs nothing more
        where, item = pending.pop()
        if isinstance(item, dict):
            yield where, item
            pending.extend((f"{where}/{key}", child) for key, child in item.items() if key not in NOT_SCHEMAS)
        elif isinstance(item, list):
            pending.extend((f"{where}/{index}", child) for index, child in enumerate(item))


def repeats(pattern: str) -> int:
    """Return the largest product of counted repeats nested in one another in pattern, or 0 when none nest."""
    try:
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return 0  # a pattern Python cannot read: the grammar library judges it
    return nested_repeats(parsed)[1]


def nested_repeats(items: Any) -> tuple[int, int]:
    """Return items' longest chain of repeat counts (their product) and its largest product of two or more."""
    chain, nested = 1, 0
    for op, value in items:
        children: list[Any] = []
        count = 1
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            low, high, child = value
            count, children = (high if high != sre_constants.MAXREPEAT else max(low, 1)), [child]
        elif op in (sre_constants.SUBPATTERN, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            children = [value[-1]]
        elif op == sre_constants.BRANCH:
            children = list(value[1])
        elif op == sre_constants.ATOMIC_GROUP:
            children = [value]
        for child in children:
            inner, inner_nested = nested_repeats(child)
            chain = max(chain, count * inner)
            nested = max(nested, inner_nested, count * inner if count > 1 and inner > 1 else 0)
    return chain, nested


def enforceable_size(schema: dict[str, Any]) -> None:
    """Refuse a schema whose objects or patterns would outgrow the grammar library's limits mid-reply."""
    optional = 0
    for where, item in subschemas(schema):
        properties, required = item.get("properties"), item.get("required")
        if isinstance(properties, dict):
            named = (
                set(required) & set(properties)
                if isinstance(required, list) and all(isinstance(name, str) for name in required)
                else set()
            )
            optional += len(properties) - len(named)
        patterns = [(f"{where}/pattern", item.get("pattern"))]
        if isinstance(item.get("patternProperties"), dict):
            patterns += [(f"{where}/patternProperties", key) for key in item["patternProperties"]]
        for at, pattern in patterns:
            product = repeats(pattern) if isinstance(pattern, str) else 0
            if product > MAX_NESTED_REPEATS:
                raise field_error(
                    f"has a pattern at {at} whose nested counted repeats multiply to {product}; "
                    f"at most {MAX_NESTED_REPEATS}"
                )
    if optional > MAX_OPTIONAL_PROPERTIES:
        raise field_error(f"must have at most {MAX_OPTIONAL_PROPERTIES} optional properties in all (got {optional})")


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
    return checked_schema(schema)[0]


def checked_schema(schema: Any, field: str | None = None) -> tuple[str, str]:
    """Return schema as compact JSON and its grammar, or raise a field error (about field, if given) saying why not."""
    try:
        text = bounded_schema(schema)
        grammar = schema_grammar(text)
        problem = grammar_problem(grammar)
        if problem is not None:
            raise field_error(explain(problem, schema))
    except PydanticCustomError as error:
        raise field_error(str((error.context or {})["must"]), field) from None
    return text, grammar


def bounded_schema(schema: Any) -> str:
    """Return schema as compact JSON, or raise a field error if its size, depth or patterns are out of bounds."""
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
    enforceable_size(schema)
    return text


def explain(problem: str, schema: dict[str, Any]) -> str:
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
    _grammar: str = PrivateAttr("")  # built once, when the schema is checked

    @model_validator(mode="after")
    def _enforceable(self) -> JsonSchemaFormat:
        self._grammar = checked_schema(self.schema_, field="schema")[1]
        return self

    @property
    def grammar(self) -> str:
        """Return the schema's grammar, built when it was checked."""
        return self._grammar


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

    def grammar(self) -> Grammar | None:
        """Return the grammar the reply must follow, as checked with the request; None for plain text."""
        if self.type == "json_object":
            return Grammar(schema_grammar(ANY_OBJECT), "response_format")
        if self.json_schema is not None:
            return Grammar(self.json_schema.grammar, SCHEMA_PARAM)
        return None

    def schema_text(self) -> str | None:
        """Return the schema the reply must follow as compact JSON, or None for plain text."""
        if self.type == "json_object":
            return ANY_OBJECT
        if self.json_schema is not None:
            return compact(self.json_schema.schema_)  # checked when the request was parsed
        return None
