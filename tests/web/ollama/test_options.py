"""Ollama's options read as Palaver's parameters, and keep_alive read as seconds."""

import pytest

from palaver.core.config import Settings
from palaver.core.errors import InvalidRequest
from palaver.web.ollama.options import FOREVER, MOST_TOKENS, KeepAlive, Options


def test_honoured_options_become_the_engines_parameters():
    options = Options.parse(
        {
            "temperature": 0.5,
            "top_p": 0.5,
            "top_k": 7,
            "num_predict": 3.0,
            "seed": 9,
            "stop": "x",
            "repeat_penalty": 1.2,
        }
    )
    params = options.applied_to(Settings().generation_defaults())
    assert (params.temperature, params.top_p, params.top_k, params.max_new_tokens) == (0.5, 0.5, 7, 3)
    assert (params.seed, params.stop, params.repetition_penalty, params.do_sample) == (9, ("x",), 1.2, True)
    assert not Options.parse({"temperature": 0}).applied_to(Settings().generation_defaults()).do_sample


def test_ollamas_special_values_mean_what_they_mean_there():
    assert Options.parse({"num_predict": -1}).num_predict == MOST_TOKENS == 1024, "-1: no limit, here the most"
    assert Options.parse({"num_predict": -2}).num_predict == MOST_TOKENS
    assert Options.parse({"seed": -1}).seed is None, "-1 is Ollama's random seed"


def test_options_that_run_the_model_are_accepted_and_change_nothing():
    runtime = {"num_ctx": 8192, "num_thread": 4, "num_gpu": 99, "use_mmap": False, "repeat_last_n": 64}
    assert Options.parse(runtime) == Options.parse({})
    assert Options.parse({"presence_penalty": 0, "mirostat": 0, "typical_p": 1.0}).presence_penalty == 0


@pytest.mark.parametrize(
    "options, param, words",
    [
        ({"not_an_option": 1}, "options.not_an_option", "'options.not_an_option' is not an option Palaver knows"),
        ({"num_predict": 0}, "options.num_predict", "from 1 to 1024, or -1 or -2"),
        ({"num_predict": True}, "options.num_predict", "from 1 to 1024"),
        ({"temperature": 3}, "options.temperature", "at most 2.0"),
        ({"seed": -2}, "options.seed", "at least 0"),
        ({"repeat_penalty": 0.9}, "options.repeat_penalty", "at least 1.0"),
        ({"frequency_penalty": 0.5}, "options.frequency_penalty", "use options.repeat_penalty"),
        ({"mirostat": 2}, "options.mirostat", "options.mirostat is not supported"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "options.stop", "at most 4"),
    ],
)
def test_refused_options_name_themselves(options, param, words):
    from palaver.web.ollama.request_schemas import GenerateRequest

    with pytest.raises(InvalidRequest) as caught:
        GenerateRequest.parse({"model": "m", "prompt": "hi", "options": options}, {"settings": Settings()})
    assert caught.value.param == param and words in caught.value.message


@pytest.mark.parametrize(
    "given, seconds",
    [(0, 0.0), ("0", 0.0), (30, 30.0), ("300", 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5)]
    + [("250ms", 0.25), ("-1", FOREVER), (-5, FOREVER), ("-1m", FOREVER)],
)
def test_keep_alive_reads_seconds_and_go_durations(given, seconds):
    from pydantic import TypeAdapter

    assert TypeAdapter(KeepAlive).validate_python(given) == seconds
