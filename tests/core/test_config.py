"""Settings table, generation parameter validation and error vocabulary."""

import pytest

from commons import SETTINGS, Settings
from palaver.core.errors import ConfigurationError
from palaver.core.parameters import PARAMETER_NAMES


def test_settings_come_from_palaver_environment_variables():
    settings = Settings.from_env(
        {
            "PALAVER_MAX_MESSAGE_CHARS": "10",
            "PALAVER_PRELOAD": "yes",
            "PALAVER_TEMPERATURE": "0",
            "PALAVER_SEED": "7",
            "OTHER": "x",
        }
    )
    assert settings.max_message_chars == 10
    assert settings.preload is True
    assert settings.temperature == 0.0
    assert settings.seed == 7
    assert Settings.from_env({}).seed is None
    assert Settings.from_env({"PALAVER_WEIGHTS": " Q8_0 "}).weights == "q8_0"


@pytest.mark.parametrize(
    "name, value, mentioned",
    [
        ("PALAVER_MAX_BODY_BYTES", "lots", "PALAVER_MAX_BODY_BYTES"),
        ("PALAVER_PRELOAD", "maybe", "PALAVER_PRELOAD"),
        ("PALAVER_TEMPERATURE", "5", "at most 2.0"),
        ("PALAVER_TOP_P", "0", "greater than 0.0"),
        ("PALAVER_WEIGHTS", "int4", "PALAVER_WEIGHTS: must be one of auto, q8_0, float32"),
    ],
)
def test_bad_settings_fail_at_start_with_the_variable_named(name, value, mentioned):
    with pytest.raises(ConfigurationError, match=mentioned):
        Settings.from_env({name: value})


def test_every_setting_has_help_and_an_env_var_name():
    for setting in SETTINGS:
        assert setting.env_var.startswith("PALAVER_") and setting.help


def test_every_parameter_but_stop_has_a_setting_for_its_default():
    names = {setting.name for setting in SETTINGS}
    assert set(PARAMETER_NAMES) - names == {"stop"}
