"""The ways people sign in (PALAVER_AUTH): each mode's pages, installed by the app factory."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.web.accounts.account import account
from palaver.web.accounts.admin import admin
from palaver.web.accounts.header import proxy_networks
from palaver.web.accounts.passwords import passwords
from palaver.web.security import request_person
from palaver.web.services import services

# How each mode signs people in; every mode has the account and admin pages beside. A mode names its sign-in page
# in guards.SIGN_IN_ENDPOINTS, and one that knows the person from each request alone (a proxy's header) adds its
# lookup to identity.person_of_request; all sign a browser in through identity.sign_person_in.
SIGN_IN_BLUEPRINTS: dict[str, tuple[Blueprint, ...]] = {"accounts": (passwords,), "oidc": (), "header": ()}


def install_accounts(app: Flask, settings: Settings) -> None:
    """Add the pages of the configured mode: none adds nothing, so a server without accounts is as it was."""
    if settings.auth == "none":
        return
    if settings.auth == "oidc":
        from palaver.web.accounts.oidc import install_oidc  # Authlib only where it signs people in: 0.17 s a start

        install_oidc(app, settings)
    if settings.auth == "header":
        check_proxy_settings(settings)
    for blueprint in (*SIGN_IN_BLUEPRINTS[settings.auth], account, admin):
        app.register_blueprint(blueprint)
    app.context_processor(person_in_templates)


def person_in_templates() -> dict[str, Any]:
    """Name the person signed in, and whether they may sign out here, for the pages' header."""
    # Behind a signing-in proxy the proxy signs people in and out: Palaver's sign-out would change nothing.
    return {"person": request_person(), "signs_out_here": services().settings.auth != "header"}


def check_proxy_settings(settings: Settings) -> None:
    """Refuse to start in header mode without the header's name and the proxies it is believed from."""
    if not settings.auth_header or not proxy_networks(settings.auth_proxies):
        raise ConfigurationError(
            "PALAVER_AUTH=header needs PALAVER_AUTH_HEADER (the header the proxy sets) and PALAVER_AUTH_PROXIES "
            "(the addresses it is believed from)"
        )
