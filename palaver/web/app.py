"""The Palaver web app: an app factory that builds the services once and wires the blueprints and checks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from palaver.backends import create_backend
from palaver.backends.sources import resolve_settings
from palaver.chat.conversations import Chat
from palaver.chat.presets import Presets
from palaver.core.config import Settings
from palaver.models.pulls import Pulls
from palaver.storage.database import connect, database_url, upgrade
from palaver.storage.people import PeopleStore
from palaver.storage.quotas import QuotaStore
from palaver.storage.store import ConversationStore
from palaver.web import caller, probes, request_log, security
from palaver.web.accounts.modes import install_accounts
from palaver.web.anthropic.response_schemas import ErrorResponse
from palaver.web.anthropic.routes import anthropic
from palaver.web.api.listing import CONVERSATION_ID
from palaver.web.api.routes import api, health
from palaver.web.body import load_body
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.fairness import ClientShares
from palaver.web.library import library
from palaver.web.markdown import render_markdown
from palaver.web.metrics import Metrics
from palaver.web.mlflow import mlflow
from palaver.web.ollama.routes import ollama, ollama_error
from palaver.web.openai.routes import v1
from palaver.web.openai.tokens import tokens
from palaver.web.pages import pages
from palaver.web.quotas import PersonQuotas
from palaver.web.rate_limits import RateLimits
from palaver.web.responses.routes import responses
from palaver.web.services import EXTENSION, Services
from palaver.web.sessions import SessionsSecureOverHttps, secret_key
from palaver.web.shares import share_links, share_links_api

# The package's own data (the top-level templates/ and static/ link here), so an installed wheel serves them too.
FILES = Path(str(resources.files("palaver.web")))


def create_app(test_config: Mapping[str, Any] | None = None, services: Services | None = None) -> Flask:
    """Create the app: from the environment, or test_config's SETTINGS and Flask config, or services built already."""
    config = dict(test_config or {})
    settings_given: Settings | None = config.pop("SETTINGS", None)
    if services is None:
        services = build_services(resolve_settings(settings_given or Settings.from_env()))
    settings = services.settings
    app = Flask("palaver", template_folder=str(FILES / "templates"), static_folder=str(FILES / "static"))
    app.config.from_mapping(
        SECRET_KEY=secret_key(settings),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.conversation_ttl),
    )
    app.config.update(config)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.extensions[EXTENSION] = services
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.session_interface = SessionsSecureOverHttps()
    # In this order: cheap refusals come before the body is read, and budgets are charged last.
    app.before_request(request_log.start_request_record)
    app.before_request(security.refuse_foreign_requests)
    app.before_request(caller.identify_caller)
    app.before_request(load_body)
    app.before_request(caller.apply_rate_limits)
    app.after_request(security.add_security_headers)
    app.after_request(request_log.finish_request_record)
    app.after_request(caller.hold_share_until_sent)
    app.teardown_request(caller.give_back_share)
    app.url_map.converters["conversation"] = ConversationIdConverter
    app.add_template_filter(render_markdown, "markdown")
    for blueprint in (
        pages,
        api,
        health,
        v1,
        anthropic,
        responses,
        ollama,
        tokens,
        mlflow,
        library,
        share_links,
        share_links_api,
    ):
        app.register_blueprint(blueprint)
    install_accounts(app, settings)
    app.register_error_handler(Exception, unrouted_error)
    probes.install(services.backend.describe)  # the worker's poller answers /healthz and /readyz without a thread
    if settings.preload:
        services.backend.start()
    return app


def build_services(settings: Settings, loader: Callable | None = None) -> Services:
    """Build the backend (its models loading with loader, if given), the store and chat service, metrics and bounds."""
    metrics = Metrics()
    backend = create_backend(settings, metrics.observer, loader)
    metrics.watch(backend)
    database = connect(database_url(settings.database_url, settings.cache_dir))
    upgrade(database)  # every start brings the schema up to date; `palaver db upgrade` does the same alone
    store = ConversationStore(
        database, settings.max_conversations, settings.conversation_ttl, lease_seconds=settings.turn_lease
    )
    store.start_sweeping(settings.sweep_interval)
    presets = Presets(settings)
    chat = Chat(
        store,
        backend,
        presets,
        settings.max_waiting_per_conversation,
        settings.request_timeout,
        settings.max_history_turns,
        settings.max_conversation_turns,
    )
    rate_limits = RateLimits(settings)
    return Services(
        settings,
        backend,
        presets,
        chat,
        metrics,
        rate_limits,
        ClientShares(settings.client_share),
        Pulls(settings.cache_dir),
        PeopleStore(database, settings.sign_in_ttl),
        PersonQuotas(QuotaStore(database), rate_limits.strategy),
    )


class ConversationIdConverter(BaseConverter):
    """Match only what can be a conversation id in /c/<id> and /api/conversations/<id>; the rest is a 404."""

    regex = CONVERSATION_ID.pattern


def unrouted_error(exc: Exception):
    """Answer errors outside any blueprint (unknown URLs, refused requests): JSON for APIs, a page elsewhere."""
    error = to_palaver_error(exc)
    if request.path.startswith("/v1/messages"):  # Anthropic's clients read their own shape, here as on the routes
        return json_error(error, ErrorResponse.of(error).model_dump())
    if request.path.startswith("/ollama"):  # and Ollama's
        return ollama_error(exc)
    if request.path.startswith(("/api/", "/v1/", "/invocations", "/tokenize", "/detokenize")) or (
        request.mimetype == "application/json"
    ):
        return json_error(error)
    return render_template("error.html", error=error), error.status
