"""The Palaver web app: an app factory that wires settings, the engine and the blueprints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from werkzeug.routing import BaseConverter

import palaver.web.boundary as services
from palaver.config import Settings
from palaver.web.api import api, health
from palaver.web.history import CONVERSATION_ID
from palaver.web.markdown import render_markdown
from palaver.web.mlflow import mlflow
from palaver.web.openai.routes import v1
from palaver.web.pages import pages

ROOT = Path(__file__).resolve().parents[2]  # templates/ and static/ sit beside the package


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create the app; test_config may carry a SETTINGS object and Flask config overrides."""
    config = dict(test_config or {})
    settings: Settings = config.pop("SETTINGS", None) or Settings.from_env()
    app = Flask("palaver", template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(
        SECRET_KEY=services.secret_key(settings),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.conversation_ttl),
    )
    app.config.update(config)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services.init_app(app, settings)
    app.url_map.converters["conversation"] = ConversationIdConverter
    app.add_template_filter(render_markdown, "markdown")
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(v1)
    app.register_blueprint(mlflow)
    app.register_error_handler(Exception, unrouted_error)
    return app


class ConversationIdConverter(BaseConverter):
    """Match only what can be a conversation id in /c/<id> and /api/conversations/<id>; the rest is a 404."""

    regex = CONVERSATION_ID.pattern


def unrouted_error(exc: Exception):
    """Answer errors outside any blueprint (unknown URLs, refused requests): JSON for APIs, a page elsewhere."""
    error = services.to_palaver_error(exc)
    if request.path.startswith(("/api/", "/v1/", "/invocations")) or request.mimetype == "application/json":
        return services.json_error(error)
    return render_template("error.html", error=error), error.status
