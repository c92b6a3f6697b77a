"""Presets: a system prompt and a user template that every request goes through."""

import json

import pytest

from commons import Message, Settings
from palaver.chat.presets import Preset, Presets
from palaver.core.errors import ConfigurationError, InvalidRequest


def test_a_preset_puts_its_system_prompt_first_and_templates_user_messages():
    preset = Preset("p", "P", system_prompt="Be kind.", user_template="Check: {text} {not a field}")
    shaped = preset.apply(
        [
            Message("system", "Client rules."),
            Message("user", "hi {there}"),
            Message("assistant", "hello"),
            Message("user", "bye"),
        ]
    )
    assert shaped == [
        Message("system", "Be kind.\n\nClient rules."),
        Message("user", "Check: hi {there} {not a field}"),
        Message("assistant", "hello"),
        Message("user", "Check: bye {not a field}"),
    ]


def test_the_default_preset_changes_nothing():
    messages = [Message("user", "hi")]
    assert Presets(Settings()).default.apply(messages) == messages


def test_settings_make_the_default_preset():
    presets = Presets(Settings(system_prompt="You are terse.", user_template="Q: {text}"))
    assert presets.default.apply([Message("user", "hi")]) == [
        Message("system", "You are terse."),
        Message("user", "Q: hi"),
    ]


def test_the_text_message_check_preset_ships():
    preset = Presets(Settings()).get("text-message-check")
    assert "Good to Go!" in preset.system_prompt
    assert "You might want to read that again before pressing send." in preset.system_prompt
    assert "{text}" in preset.user_template


def test_preset_files_come_from_a_directory(tmp_path):
    (tmp_path / "pirate.json").write_text(json.dumps({"title": "Pirate", "system_prompt": "Talk like a pirate."}))
    presets = Presets(Settings(presets_dir=str(tmp_path), preset="pirate"))
    assert presets.default.name == "pirate" and presets.get("pirate").title == "Pirate"


@pytest.mark.parametrize(
    "content, words", [("{not json", "preset file"), (json.dumps({"user_template": "no placeholder"}), "{text}")]
)
def test_bad_preset_files_fail_at_start(tmp_path, content, words):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ConfigurationError, match=words):
        Presets(Settings(presets_dir=str(tmp_path)))


def test_unknown_presets_are_refused():
    with pytest.raises(ConfigurationError, match="PALAVER_PRESET"):
        Presets(Settings(preset="nope"))
    with pytest.raises(InvalidRequest) as caught:
        Presets(Settings()).get("nope")
    assert caught.value.param == "preset" and "text-message-check" in caught.value.message


def test_a_template_reaches_the_model(make_app, chat_model):
    plain = make_app(chat_model).test_client().post("/api/chat", json={"message": "hi"}).get_json()
    templated = (
        make_app(chat_model, user_template="Please answer this: {text}")
        .test_client()
        .post("/api/chat", json={"message": "hi"})
        .get_json()
    )
    assert templated["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
