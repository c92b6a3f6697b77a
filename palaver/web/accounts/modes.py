"""The ways people sign in (PALAVER_AUTH): each mode's pages, installed by the app factory."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.web.accounts.account import account
from palaver.web.accounts.admin import admin
from palaver.web.accounts.passwords import passwords
from palaver.web.security import request_person

# How each mode signs people in; every mode has the account and admin pages beside. A mode names its sign-in page
# in guards.SIGN_IN_ENDPOINTS, and one that knows the person from each request alone (a proxy's header) adds its
# lookup to identity.person_of_request; all sign a browser in through identity.sign_person_in.
SIGN_IN_BLUEPRINTS: dict[str, tuple[Blueprint, ...]] = {"accounts": (passwords,)}
NOT_BUILT = {"oidc": "an OpenID Connect provider", "header": "a trusted proxy's header"}


def install_accounts(app: Flask, settings: Settings) -> None:
    """Add the pages of the configured mode: none adds nothing, so a server without accounts is as it was."""
    if settings.auth == "none":
        return
    if settings.auth in NOT_BUILT:
        raise ConfigurationError(
            f"PALAVER_AUTH={settings.auth} (signing in through {NOT_BUILT[settings.auth]}) is not built yet; "
            "use none or accounts"
        )
    for blueprint in (*SIGN_IN_BLUEPRINTS[settings.auth], account, admin):
        app.register_blueprint(blueprint)
    app.context_processor(person_in_templates)


def person_in_templates() -> dict[str, Any]:
    """Name the person signed in, for the pages' header."""
    return {"person": request_person()}
