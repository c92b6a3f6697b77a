"""Constrained replies: every one that stops parses and follows its schema, and constraints keep rows' bits."""

import json
import threading

import jsonschema
import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import canonical_schema
from palaver.engine.constraints import Constraints
from palaver.engine.families import Prompt
from palaver.engine.native_loading import load_native

SCHEMAS = [
    {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"enum": ["red", "green"]}, "minItems": 1, "maxItems": 3},
    {"type": "string", "pattern": "^[a-c]{2,5}$"},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number", "minimum": -1, "maximum": 1, "multipleOf": 0.25}},
                "required": ["x"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "point"],
        "additionalProperties": False,
    },
    {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
    {"type": "object", "additionalProperties": False},
]


@pytest.fixture(scope="module")
def family(gguf_chat_model, tmp_path_factory):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path_factory.mktemp("cache")))
    return load_native(settings, "tiny", str(gguf_chat_model)).family


@pytest.fixture(scope="module")
def constraints(family):
    return Constraints(family.tokenizer, family.model.config.vocab_size, family.tokenizer.eos_token_id)


def row(family, constraints, schema, seed, temperature=0.9, tokens=120):
    params = Settings(temperature=temperature, do_sample=temperature > 0, seed=seed).generation_defaults()
    params = type(params)(**{**params.__dict__, "max_new_tokens": tokens})
    new = family.new_row(Prompt([5, 17, 42, 99, 3, 7, 8, 9], 0), params, threading.Event())
    new.constraint = None if schema is None else constraints.matcher(canonical_schema(schema))
    return new


def run(batch, rows):
    batch.add_many(rows)
    while batch.rows:
        batch.step()
        batch.remove_done()
    return [r.reply() for r in rows]


def test_every_reply_that_stops_parses_and_follows_its_schema(family, constraints):
    rows = [row(family, constraints, schema, seed) for schema in SCHEMAS for seed in range(4)]
    replies = run(family.model.new_batch(None), rows)
    for schema, reply in zip([s for s in SCHEMAS for _ in range(4)], replies):
        # A random model, held to a bounded schema, always completes it.
        assert reply.finish_reason == "stop", (schema, reply)
        jsonschema.validate(json.loads(reply.text), schema)


def test_a_constrained_rows_tokens_are_the_same_alone_and_beside_unconstrained_rows(family, constraints):
    alone = row(family, constraints, SCHEMAS[3], seed=None, temperature=0.0)
    run(family.model.new_batch(None), [alone])
    together = [row(family, constraints, None, seed=1), row(family, constraints, SCHEMAS[3], None, 0.0)]
    together.append(row(family, constraints, None, seed=2, tokens=7))
    run(family.model.new_batch(None), together)
    assert together[1].generated == alone.generated and alone.reply().finish_reason == "stop"


def test_a_tokenizer_with_no_json_form_gets_a_clear_400():
    class SlowTokenizer:
        eos_token_id = 2

    with pytest.raises(InvalidRequest, match="needs a fast tokenizer"):
        Constraints(SlowTokenizer(), 100, 2).matcher('{"type":"object"}')
