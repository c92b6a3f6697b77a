"""A request's inputs for the loaded model: its prompt as the model is fed it, its grammar, and its tokens' text."""

import json
from dataclasses import replace

import pytest
from helpers import count_grammar_work

from commons import Message, Settings
from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import Grammar, schema_grammar
from palaver.core.requests import GenerationRequest
from palaver.core.tools import FunctionTool, ToolUse
from palaver.engine.native.loading import load_native
from palaver.engine.scheduling.generation import Job
from palaver.engine.scheduling.request_inputs import RequestInputs

CLOCK = FunctionTool.model_validate({"type": "function", "function": {"name": "get_time"}})


@pytest.fixture(scope="module")
def inputs(gguf_chat_model, tmp_path_factory):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path_factory.mktemp("inputs")))
    return RequestInputs(load_native(settings, "tiny", str(gguf_chat_model)).family)


def request(**fields) -> Job:
    params = Settings(max_new_tokens=8).generation_defaults()
    return Job(GenerationRequest(fields.pop("params", params), **fields))


def test_a_chat_with_tools_is_fed_the_tools_and_held_to_their_grammar(inputs):
    plain = request(messages=[Message("user", "time?")])
    with_tools = request(messages=[Message("user", "time?")], tools=ToolUse.of([CLOCK], "required", True))
    inputs.prepare(plain)
    inputs.prepare(with_tools)
    assert plain.constraint is None and with_tools.constraint is not None
    assert len(with_tools.built.input_ids) > len(plain.built.input_ids), "the tools are in the prompt"
    assert '"get_time"' in inputs.text_of(with_tools.built.input_ids)
    none = request(messages=[Message("user", "time?")], tools=ToolUse.of([CLOCK], "none", True))
    inputs.prepare(none)
    assert none.constraint is None and none.built.input_ids == plain.built.input_ids, "none shows no tools"


def test_a_schema_becomes_a_grammar_and_logprobs_have_their_token_bytes(inputs):
    params = Settings(max_new_tokens=8).generation_defaults()
    schema = json.dumps({"type": "object"}, separators=(",", ":"))
    constrained = request(prompt="x", params=replace(params, json_schema=schema, logprobs=2))
    inputs.prepare(constrained)
    assert constrained.constraint is not None and len(inputs.constraints().token_bytes()) == len(
        inputs.family.tokenizer
    )


def test_ids_past_the_vocabulary_are_refused_naming_their_place(inputs):
    assert inputs.text_of(inputs.family.tokenizer.encode("hello", add_special_tokens=False)) == "hello"
    with pytest.raises(InvalidRequest) as caught:
        inputs.text_of([1, len(inputs.family.tokenizer)])
    assert caught.value.param == "tokens" and "'tokens[1]'" in caught.value.message


def test_a_carried_grammar_is_compiled_once_and_never_built_again(inputs, monkeypatch):
    schema = '{"type":"object","properties":{"carried":{"type":"integer"}},"required":["carried"]}'
    carried = Grammar(schema_grammar(schema), "response_format.json_schema.schema")
    work = count_grammar_work(monkeypatch)
    params = replace(Settings(max_new_tokens=8).generation_defaults(), json_schema=schema)
    for _ in range(2):
        inputs.prepare(request(prompt="x", params=params, grammar=carried))
    assert work.built == [], "the engine builds no grammar a request carries"
    assert work.compiled == [carried.text], "compiled against the tokenizer once, then copied from the cache"


def test_a_request_that_carries_no_grammar_gets_its_schemas_built_once_here(inputs, monkeypatch):
    work = count_grammar_work(monkeypatch)
    params = replace(Settings(max_new_tokens=8).generation_defaults(), json_schema='{"type":"array"}')
    job = request(prompt="x", params=params)
    inputs.prepare(job)
    assert job.constraint is not None and work.built == ['{"type":"array"}']


def test_the_turn_count_a_request_carries_is_part_of_the_one_truncation(inputs):
    turns = [Message("user" if index % 2 == 0 else "assistant", f"turn {index}") for index in range(21)]
    capped = request(messages=turns, max_history=8)
    inputs.prepare(capped)
    assert capped.built.truncated_turns == 12, "the new message and the eight before it remain"
    whole = request(messages=turns)
    inputs.prepare(whole)
    assert whole.built.truncated_turns == 0 and len(whole.built.input_ids) > len(capped.built.input_ids)
