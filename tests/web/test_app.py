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
    try:
        assert app.testing and app.config["MAX_CONTENT_LENGTH"] == 1234
        assert {"pages", "api", "health", "v1", "mlflow"} <= set(app.blueprints)
    finally:
        app.extensions["palaver"].close()
