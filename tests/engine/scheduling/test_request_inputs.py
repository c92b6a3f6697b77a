"""A request's inputs for the loaded model: its prompt as the model is fed it, its grammar, and its tokens' text."""

import json

import pytest

from commons import Message, Settings
from palaver.core.errors import InvalidRequest
from palaver.core.tools import FunctionTool, ToolUse
from palaver.engine.native.loading import load_native
from palaver.engine.scheduling.generation import GenerationRequest
from palaver.engine.scheduling.request_inputs import RequestInputs

CLOCK = FunctionTool.model_validate({"type": "function", "function": {"name": "get_time"}})


@pytest.fixture(scope="module")
def inputs(gguf_chat_model, tmp_path_factory):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path_factory.mktemp("inputs")))
    return RequestInputs(load_native(settings, "tiny", str(gguf_chat_model)).family)


def request(**fields) -> GenerationRequest:
    params = Settings(max_new_tokens=8).generation_defaults()
    return GenerationRequest(fields.pop("params", params), **fields)


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
    from dataclasses import replace

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
