"""Constrained replies: every one that stops parses and follows its schema, and constraints keep rows' bits."""

import json
import threading
from dataclasses import replace

import jsonschema
import numpy as np
import pytest
from helpers import schema_outgrowing_the_parser_mid_reply, steps_to_finish

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import canonical_schema, schema_grammar
from palaver.core.tool_calls import read_calls
from palaver.core.tools import NO_PARAMETERS, FunctionTool, NamedToolChoice, ToolUse, lark_grammar
from palaver.engine.decoding.constraints import MAX_DIGITS, Constraints, GrammarFailed
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.native.batch import NativeBatch
from palaver.engine.native.loading import load_native
from palaver.engine.prompting.model_family import Prompt

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
    return Constraints(family.tokenizer, family.model.vocab_size, family.tokenizer.eos_token_id)


def row(family, constraints, schema, seed, temperature=0.9, tokens=120):
    params = Settings(temperature=temperature, do_sample=temperature > 0, seed=seed).generation_defaults()
    params = type(params)(**{**params.__dict__, "max_new_tokens": tokens})
    new = family.new_row(Prompt([5, 17, 42, 99, 3, 7, 8, 9], 0), params, threading.Event())
    new.constraint = None if schema is None else constraints.constraint(schema_grammar(canonical_schema(schema)))
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

    with pytest.raises(InvalidRequest, match="need a fast tokenizer"):
        Constraints(SlowTokenizer(), 100, 2).constraint(schema_grammar('{"type":"object"}'))


def test_a_number_without_bounds_stops_at_twenty_digits_even_when_the_model_wants_more(family, constraints):
    grammar = schema_grammar(canonical_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 2}))
    constraint = constraints.constraint(grammar)
    digits = [i for i, raw in enumerate(constraints.token_bytes()) if raw == b"7"]
    logits = np.zeros(family.model.vocab_size, dtype=np.float32)
    logits[digits] = 50.0  # a model that would write sevens for ever
    text = b""
    while not constraint.is_stopped() and len(text) < 200:
        token = int(constraint.mask(logits).argmax())
        constraint.consume(token)
        text += constraints.token_bytes()[token]
    runs = [len(run) for run in text.replace(b"[", b",").replace(b"]", b",").split(b",") if run]
    assert constraint.is_stopped() and max(runs) == MAX_DIGITS, text
    assert json.loads(text) == [int("7" * MAX_DIGITS)] * 2


def test_a_pattern_that_needs_more_digits_still_gets_them(family, constraints):
    constraint = constraints.constraint(schema_grammar(canonical_schema({"type": "string", "pattern": "^[7]{30}$"})))
    logits = np.zeros(family.model.vocab_size, dtype=np.float32)
    text = b""
    while not constraint.is_stopped() and len(text) < 200:
        token = int(constraint.mask(logits).argmax())
        constraint.consume(token)
        text += constraints.token_bytes()[token]
    assert json.loads(text) == "7" * 30


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 6}, "n": {"type": "integer", "maximum": 9}},
                "required": ["q"],
                "additionalProperties": False,
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]


def tool_row(family, constraints, choice, seed, parallel=True):
    use = ToolUse.of([FunctionTool.model_validate(t) for t in TOOLS], choice, parallel)
    new = row(family, constraints, None, seed, tokens=100)
    new.constraint = constraints.constraint(lark_grammar(use.grammar()), param="tools")
    return new


@pytest.mark.parametrize("choice", ["required", "auto", NamedToolChoice(type="function", function={"name": "now"})])
def test_every_reply_with_tools_is_an_answer_or_calls_whose_arguments_follow_their_schema(family, constraints, choice):
    rows = [tool_row(family, constraints, choice, seed, parallel=seed % 2 == 0) for seed in range(6)]
    for new in rows:
        new.stream.strip_leading = False
    checked = []
    for reply in run(family.model.new_batch(None), rows):
        events = [*read_calls(iter([reply.text, reply]))]
        ended = events[-1]
        if ended.finish_reason == "length":
            continue  # random weights may write calls until max_tokens; what ends is what is checked
        if choice == "auto" and not ended.tool_calls:
            assert "<tool_call>" not in reply.text
            continue
        assert ended.finish_reason == "tool_calls" and ended.tool_calls, reply.text
        for call in ended.tool_calls:
            function = next(t["function"] for t in TOOLS if t["function"]["name"] == call.name)
            jsonschema.validate(json.loads(call.arguments), function.get("parameters", NO_PARAMETERS))
        checked.append(ended)
        if not isinstance(choice, str):
            assert [c.name for c in ended.tool_calls] == ["now"]
    assert choice == "auto" or len(checked) >= 3, "most replies held to calls end within 100 tokens"


def test_logprobs_are_the_same_bits_alone_and_in_a_batch(family, constraints):
    def logged(seed, schema=None):
        new = row(family, constraints, schema, seed, tokens=12)
        new.params = replace(new.params, logprobs=5)
        new.token_bytes = constraints.token_bytes()
        return new

    alone = logged(3, SCHEMAS[1])
    run(family.model.new_batch(None), [alone])
    together = [logged(1), logged(3, SCHEMAS[1]), logged(2)]
    run(family.model.new_batch(None), together)
    assert together[1].logprobs == alone.logprobs and len(alone.logprobs) == len(alone.generated) - (
        alone.generated[-1] in alone.stream.stop_token_ids
    )
    assert alone.reply().logprobs == tuple(alone.logprobs)
    assert all(len(entry.top) <= 5 for entry in alone.logprobs)


SELF_REFERENCE = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
WIDE = {"type": "object", "properties": {f"p{index}": {"type": "integer"} for index in range(600)}}


def test_a_grammar_that_matches_nothing_is_refused_before_generation_naming_its_field(constraints):
    param = "response_format.json_schema.schema"
    with pytest.raises(InvalidRequest) as caught:
        constraints.constraint(schema_grammar(canonical_schema(SELF_REFERENCE)), param=param)
    assert caught.value.param == param and caught.value.status == 400 and "<state>" not in caught.value.message


def test_a_grammar_that_breaks_mid_reply_raises_a_grammar_error_and_never_counts_as_stopped(family, constraints):
    param = "response_format.json_schema.schema"
    constraint = constraints.constraint(
        schema_grammar(canonical_schema(schema_outgrowing_the_parser_mid_reply())), param=param
    )
    logits = np.zeros(family.model.vocab_size, dtype=np.float32)
    with pytest.raises(GrammarFailed) as caught:
        for token in family.tokenizer.encode('{"a":"xy","b":{', add_special_tokens=False):
            constraint.mask(logits)
            constraint.consume(token)
        constraint.mask(logits)
    assert caught.value.param == param and caught.value.status == 400 and caught.value.code == "grammar_failed"
    assert "items" in caught.value.message and "<grammar>" not in caught.value.message
    assert not constraint.is_stopped(), "a grammar in its error state is not a complete reply"


def test_a_row_whose_grammar_breaks_ends_with_the_grammar_error_not_stop(family, constraints):
    broken = row(family, constraints, schema_outgrowing_the_parser_mid_reply(), seed=1, tokens=60)
    run(family.model.new_batch(None), [broken])
    assert isinstance(broken.error, GrammarFailed), (broken.error, broken.stream.text)


def test_an_object_of_six_hundred_optional_properties_is_served_and_follows_its_schema(family, constraints):
    replies = run(family.model.new_batch(None), [row(family, constraints, WIDE, seed) for seed in range(3)])
    for reply in replies:
        assert reply.finish_reason in ("stop", "length")
        if reply.finish_reason == "stop":
            jsonschema.validate(json.loads(reply.text), WIDE)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_forced_text_comes_without_a_step_each_and_a_reply_is_the_same_alone_and_batched(
    family, constraints, temperature
):
    """Keys and punctuation a schema forces are taken at once; greedy or seeded, the same tokens beside others."""
    steps, forced, alone = {}, 0, []
    for jump_forward in (False, True):
        prefix_cache = PrefixCache(10_000)
        batch = NativeBatch(family.model.cache, prefix_cache, jump_forward=jump_forward)
        new = row(family, constraints, SCHEMAS[3], seed=3, temperature=temperature)
        steps[jump_forward] = steps_to_finish(batch, [new])
        assert new.reply().finish_reason == "stop"
        jsonschema.validate(json.loads(new.reply().text), SCHEMAS[3])
        # The finished turn's cache holds exactly its prompt and reply (all but the last token), ready for the next.
        assert list(prefix_cache.entries) == [tuple(new.prompt_ids + new.generated[:-1])]
        prefix_cache.clear()
        if jump_forward:
            forced, alone = batch.forced_tokens, new.generated
    together = [row(family, constraints, SCHEMAS[3], seed=3, temperature=temperature)]
    together += [row(family, constraints, None, seed=1), row(family, constraints, SCHEMAS[0], seed=2, tokens=9)]
    steps_to_finish(NativeBatch(family.model.cache, None), together)
    assert together[0].generated == alone
    assert forced >= 6 and steps[True] < steps[False], (forced, steps)  # '"name":"', '","point":{"x":', '}}'
    assert family.model.cache.used_pages == 0


def test_a_reply_the_grammar_forces_whole_is_the_tokenizers_own_tokens(family, constraints):
    """Forced text comes as the tokenizer writes it, so the next turn's prompt finds the reply in the prefix cache."""
    answer = "the quick brown fox jumps over the lazy dog"
    schema = {
        "type": "object",
        "properties": {"answer": {"const": answer}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    new = row(family, constraints, schema, seed=1)
    steps = steps_to_finish(NativeBatch(family.model.cache, None), [new])
    text = new.reply().text
    assert json.loads(text) == {"answer": answer} and new.reply().finish_reason == "stop"
    assert new.generated == family.tokenizer.encode(text, add_special_tokens=False)
    assert steps <= 3, steps  # the prompt's step chooses '{', then the rest is forced


def test_logprobs_keep_a_step_for_every_token(family, constraints):
    """Each token's logprobs are its own step's distribution: with logprobs asked for, nothing is taken at once."""
    batch = NativeBatch(family.model.cache, None)
    new = row(family, constraints, SCHEMAS[3], seed=3, temperature=0.0)
    new.params = replace(new.params, logprobs=2)
    new.token_bytes = constraints.token_bytes()
    steps_to_finish(batch, [new])
    assert batch.forced_tokens == 0 and len(new.logprobs) == len(new.generated)


def test_a_key_and_its_punctuation_come_as_the_tokenizer_writes_them_on_the_embedded_model(tmp_path):
    """Where the model would split '":"' into '"' and ':"', the forced text comes as the tokenizer's one token."""
    from palaver.core.types import Message
    from palaver.engine.model_sources import embedded_gguf_path

    settings = Settings(model="", cache_dir=str(tmp_path), temperature=0.0)
    family = load_native(settings, "embedded", str(embedded_gguf_path())).family
    constraints = Constraints(family.tokenizer, family.model.vocab_size, family.tokenizer.eos_token_id)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 100}}, "required": ["answer"]}
    prompt = family.build_prompt([Message("user", "Tell me about the sea.")], 8)
    params = Settings(temperature=0.0, max_new_tokens=8).generation_defaults()
    new = family.new_row(Prompt(prompt.input_ids, 0), params, threading.Event())
    new.constraint = constraints.constraint(schema_grammar(canonical_schema(schema)))
    steps_to_finish(family.model.new_batch(None), [new])
    opening = family.tokenizer.encode('{"answer":"', add_special_tokens=False)
    assert new.reply().text.startswith('{"answer":"')
    assert new.generated[: len(opening)] == opening, [family.tokenizer.decode([t]) for t in new.generated]


def test_a_long_const_is_taken_a_steps_worth_at_a_time_and_stays_valid(family, constraints):
    """A schema may force kilobytes: each step tokenizes and takes only what the reply has room for."""
    answer = "forced text that goes on " * 120  # 3,000 characters, far more than the reply's tokens
    schema = {"type": "object", "properties": {"answer": {"const": answer}}, "required": ["answer"]}
    new = row(family, constraints, schema, seed=None, temperature=0.0, tokens=24)
    steps = steps_to_finish(NativeBatch(family.model.cache, None), [new])
    reply = new.reply()
    assert reply.finish_reason == "length" and len(new.generated) == 24
    assert json.dumps({"answer": answer}, separators=(",", ":")).startswith(reply.text)
    assert steps <= 4, steps
    assert family.model.cache.used_pages == 0
