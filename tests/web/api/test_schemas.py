"""The JSON API's and the form's request models: parsing, errors that name the field, and the schema."""

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.web.api.schemas import ChatRequest, FormChatRequest, chat_schema

SETTINGS = Settings(max_message_chars=20)


def parse(body):
    return ChatRequest.parse(body, {"settings": SETTINGS})


@pytest.mark.parametrize(
    "body, param, words",
    [
        ([], None, "JSON object"),
        ("hi", None, "JSON object"),
        ({}, "message", "required"),
        ({"message": 5}, "message", "must be a string"),
        ({"message": " \n\t "}, "message", "must not be empty"),
        ({"message": "x" * 21}, "message", "at most 20 characters (got 21)"),
        ({"message": "hi", "conversation_id": 5}, "conversation_id", "string of 1 to 64"),
        ({"message": "hi", "conversation_id": "x" * 65}, "conversation_id", "string of 1 to 64"),
        ({"message": "hi", "max_new_tokens": 0}, "max_new_tokens", "at least 1"),
        ({"message": "hi", "extra": 1}, "extra", "unknown field 'extra'; accepted fields are"),
        ({"message": "hi", "preset": 3}, "preset", "must be a string"),
    ],
)
def test_chat_requests_refuse_bad_bodies_naming_the_field(body, param, words):
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.param == param and words in caught.value.message


def test_chat_requests_strip_the_message_and_apply_parameters():
    chat_input = parse({"message": "  hi  ", "temperature": 0, "conversation_id": "abc"}).to_input(SETTINGS)
    assert (chat_input.text, chat_input.conversation_id, chat_input.params.greedy) == ("hi", "abc", True)
    assert chat_input.params.max_new_tokens == SETTINGS.max_new_tokens


def test_the_form_reads_text_and_takes_empty_fields_as_defaults():
    form = {"textbox": " hi ", "max_new_tokens": "12", "do_sample": "false", "seed": "", "temperature": ""}
    chat_input = FormChatRequest.from_form(form, SETTINGS).to_input(SETTINGS)
    assert (chat_input.text, chat_input.params.max_new_tokens, chat_input.params.do_sample) == ("hi", 12, False)
    assert (chat_input.params.seed, chat_input.params.temperature) == (None, SETTINGS.temperature)


@pytest.mark.parametrize(
    "form, param, words",
    [
        ({}, "textbox", "is required"),
        ({"textbox": "   "}, "textbox", "must not be empty"),
        ({"textbox": "hi", "max_new_tokens": "twelve"}, "max_new_tokens", "an integer"),
        ({"textbox": "hi", "temperature": "nan"}, "temperature", "a finite number"),
        ({"textbox": "hi", "message": "hi"}, "message", "unknown field"),
    ],
)
def test_the_form_names_its_own_fields_in_errors(form, param, words):
    with pytest.raises(InvalidRequest) as caught:
        FormChatRequest.from_form(form, SETTINGS)
    assert caught.value.param == param and words in caught.value.message


def test_the_schema_is_the_models_with_this_servers_defaults_and_limits():
    schema = chat_schema(Settings(max_message_chars=300, temperature=0.2))
    request = schema["request"]
    assert request["required"] == ["message"] and request["additionalProperties"] is False
    properties = request["properties"]
    assert properties["message"]["maxLength"] == 300
    temperature = properties["temperature"]
    assert temperature["default"] == 0.2 and temperature["anyOf"][0] == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 2.0,
    }
    assert properties["top_p"]["anyOf"][0]["exclusiveMinimum"] == 0.0
    assert set(schema["response"]["properties"]) == {
        "reply",
        "reasoning",
        "conversation_id",
        "model",
        "usage",
        "truncated_turns",
        "finish_reason",
    }


def test_every_surface_names_its_model_and_bounds_its_text_by_one_rule(make_router, gguf_chat_model):
    from palaver.web.api.schemas import named_model
    from palaver.web.openai.messages import ChatMessage

    router = make_router(gguf_chat_model)
    assert named_model(router, "chat-llama") == "chat-llama"
    with pytest.raises(InvalidRequest, match="'model' is required; this server serves 'chat-llama'"):
        named_model(router, "")
    settings = Settings(max_message_chars=5)
    with pytest.raises(InvalidRequest, match="at most 5 characters"):
        ChatMessage.parse({"role": "user", "content": "too long"}, {"settings": settings})
