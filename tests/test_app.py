"""The app factory: configuration, blueprints, and a web layer that never imports torch."""

import subprocess
import sys

from servers import ROOT

from app import create_app


def test_importing_the_app_does_not_import_torch():
    code = "import sys, app; assert app.app.name == 'palaver'; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_test_config_overrides_flask_settings(make_settings, chat_model):
    app = create_app({"SETTINGS": make_settings(chat_model, max_body_bytes=1234), "TESTING": True})
    assert app.testing and app.config["MAX_CONTENT_LENGTH"] == 1234
    assert {"pages", "api", "health"} <= set(app.blueprints)


def test_the_generated_secret_key_is_kept_across_restarts(make_settings, chat_model):
    settings = make_settings(chat_model)
    assert create_app({"SETTINGS": settings}).secret_key == create_app({"SETTINGS": settings}).secret_key
    configured = make_settings(chat_model, secret_key="s3cret")
    assert create_app({"SETTINGS": configured}).secret_key == "s3cret"
