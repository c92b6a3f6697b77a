"""One setting: how its variable's text is read, and how its default is shown in the settings table."""

from dataclasses import fields

import pytest

from palaver.core.config import SETTINGS, Settings
from palaver.core.setting import Setting, default_cache_dir, one_of, parse_duration, parse_optional_int


def test_a_choice_is_read_in_any_case_and_a_wrong_one_names_the_choices():
    parse = one_of("auto", "float32")
    assert parse(" FLOAT32 ") == "float32"
    with pytest.raises(ValueError, match="must be one of auto, float32, not 'q4'"):
        parse("q4")


@pytest.mark.parametrize(
    ("text", "seconds"), [("", 0), ("0", 0), ("300", 300), ("90s", 90), ("5m", 300), ("1.5h", 5400)]
)
def test_a_duration_is_seconds_or_has_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1", "nan", "1d", "m", "1e12"])
def test_a_wrong_duration_names_the_forms_it_takes(text):
    with pytest.raises(ValueError, match="a duration such as 300, 90s, 5m or 1h|from 0 seconds up"):
        parse_duration(text)


def test_an_optional_integer_is_empty_or_a_number():
    assert parse_optional_int("") is None and parse_optional_int(" ") is None and parse_optional_int("7") == 7
    with pytest.raises(ValueError):
        parse_optional_int("seven")


def test_each_setting_shows_its_variable_parser_and_default_as_the_table_does():
    by_name = {setting.name: setting for setting in SETTINGS}
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)], "one setting per field, in order"
    assert by_name["max_pending"].env_var == "PALAVER_MAX_PENDING" and by_name["max_pending"].shown_default == "`64`"
    assert by_name["preload"].parse("true") is True and by_name["preload"].shown_default == "`false`"
    assert by_name["model"].shown_default == "(empty)" and by_name["seed"].parse("") is None
    assert by_name["cache_dir"].shown_default.startswith("`$XDG_CACHE_HOME")
    assert Setting.of(fields(Settings)[0]) == by_name["model"]


def test_the_cache_directory_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "palaver")


def test_a_duration_with_a_floor_refuses_less_and_nothing():
    assert parse_duration("5s", at_least=2) == 5
    for text in ("1", "", "0"):
        with pytest.raises(ValueError, match="a duration"):
            parse_duration(text, at_least=2)
