"""Making a model ready in the worker: reading settings never fetches or writes; resolving applies what a model
saved, under what was set explicitly."""

import subprocess
import sys

import pytest
from servers import ROOT

from palaver.backends.sources import model_source, resolve_settings
from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError


def test_reading_settings_never_fetches_or_writes(tmp_path):
    cache = tmp_path / "cache"
    environ = {"PALAVER_MODEL": "models:/unreachable/1", "PALAVER_CACHE_DIR": str(cache)}
    settings = Settings.from_env(environ)
    assert settings.model == "models:/unreachable/1" and not cache.exists()
    # gunicorn's master reads the settings too, in gunicorn.conf.py: it must neither fetch nor load.
    code = "import runpy; runpy.run_path('gunicorn.conf.py'); import sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**environ, "PATH": "/usr/bin:/bin"}, check=True)
    assert not cache.exists()


def test_a_plain_model_resolves_to_itself_and_the_engine_finds_it(chat_model, tmp_path):
    settings = Settings(model=str(chat_model), cache_dir=str(tmp_path))
    assert resolve_settings(settings, {}) == settings and model_source(settings) is None


def test_an_upstream_without_its_address_is_refused_when_the_backend_is_made():
    settings = Settings.from_env({"PALAVER_BACKEND": "openai"})
    with pytest.raises(ConfigurationError, match="PALAVER_UPSTREAM_URL"):
        resolve_settings(settings, {})


def test_explicit_names_are_those_in_the_environment_or_away_from_their_defaults():
    settings = Settings(max_new_tokens=9)
    assert settings.explicit_names({"PALAVER_TOP_P": "0.9"}) == {"max_new_tokens", "top_p"}
