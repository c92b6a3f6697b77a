"""Signing in with an OpenID Connect provider (PALAVER_AUTH=oidc) through Authlib: PKCE, state, nonce, checked token."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for

from palaver.core.config import Settings, comma_list
from palaver.core.errors import ConfigurationError, Forbidden
from palaver.web.accounts.account import claimable_owner
from palaver.web.accounts.guards import safe_next
from palaver.web.accounts.identity import sign_person_in
from palaver.web.accounts.vetted import vetted_person
from palaver.web.errors import to_palaver_error
from palaver.web.services import services

oidc = Blueprint("oidc", __name__)
log = logging.getLogger("palaver")

PROVIDER = "provider"  # Authlib's name for it: its state, nonce and PKCE verifier sit in the session under it
NEXT_PAGE = "oidc_next"  # the session's field for the page to go back to, kept across the provider's pages
CLOCK_LEEWAY = 60  # seconds an ID token's times may be off by between the provider's clock and ours


def install_oidc(app: Flask, settings: Settings) -> None:
    """Register the provider with Authlib; its discovery document is read at the first sign-in, not at start."""
    missing = [name for name in ("oidc_issuer", "oidc_client_id") if not getattr(settings, name)]
    if missing:
        raise ConfigurationError(f"PALAVER_AUTH=oidc needs {' and '.join(f'PALAVER_{m.upper()}' for m in missing)}")
    OAuth(app).register(
        PROVIDER,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret or None,
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256", "timeout": 10},
    )
    app.register_blueprint(oidc)


def provider():
    return current_app.extensions["authlib.integrations.flask_client"].create_client(PROVIDER)


def provider_name() -> str:
    settings = services().settings
    return settings.oidc_name or urlsplit(settings.oidc_issuer).hostname or settings.oidc_issuer


@oidc.get("/sign-in")
def sign_in():
    return render_template("sign_in_with.html", provider=provider_name(), next=request.args.get("next", ""))


@oidc.get("/sign-in/oidc")
def start():
    """Send the browser to the provider with a new state, nonce and PKCE challenge, kept in its session."""
    session[NEXT_PAGE] = safe_next(request.args.get("next"))
    return provider().authorize_redirect(url_for("oidc.callback", _external=True))


@oidc.get("/sign-in/oidc/callback")
def callback():
    """Check the provider's answer and the ID token it vouches with; sign the person in, or refuse and say why."""
    next_page = safe_next(session.pop(NEXT_PAGE, None))
    claims = verified_claims()
    admitted(claims)
    email = str(claims["email"]).strip().lower()
    issuer = services().settings.oidc_issuer.rstrip("/")
    sign_person_in(vetted_person(f"oidc:{issuer}|{claims['sub']}", email, str(claims.get("name") or "")))
    if claimable_owner() is not None:  # offered, never taken unasked
        return redirect(url_for("account.claim_offer", next=next_page), code=303)
    return redirect(next_page, code=303)


def verified_claims() -> dict[str, Any]:
    """Trade the code for tokens; return the ID token's claims, its signature, issuer, audience, times, nonce checked.

    Claims the ID token leaves out (some providers give email and groups only there) come from the userinfo endpoint.
    """
    client = provider()
    try:
        issuer = client.load_server_metadata()["issuer"]
        if issuer.rstrip("/") != services().settings.oidc_issuer.rstrip("/"):
            raise OAuthError(description=f"the discovery document names another issuer, {issuer}")
        # Authlib checks aud only when told to: without this, a token for another client with our azp would pass.
        options = {"iss": {"essential": True, "value": issuer}, "aud": {"essential": True, "value": client.client_id}}
        token = client.authorize_access_token(claims_options=options, leeway=CLOCK_LEEWAY)
        claims = dict(token.get("userinfo") or {})
        if not claims:
            raise OAuthError(description="the provider sent no ID token")
        if "email" not in claims and client.load_server_metadata().get("userinfo_endpoint"):
            more = client.userinfo(token=token)
            if more.get("sub") != claims["sub"]:
                raise OAuthError(description="the userinfo endpoint names another subject")
            claims = {**more, **claims}
    except MismatchingStateError as exc:
        raise refused(exc, "this sign-in was not started from this browser, or it was finished already") from None
    except Exception as exc:  # whatever failed, the answer is not believed; the log says what it was
        raise refused(exc, "the provider's answer could not be verified") from None
    return claims


def admitted(claims: dict[str, Any]) -> None:
    """Refuse a person without a verified email, or outside the allowed domains and groups."""
    settings = services().settings
    email = str(claims.get("email") or "")
    if "@" not in email:
        raise refused("no email in the ID token or userinfo", "the provider did not tell us your email address")
    if claims.get("email_verified") in (False, "false"):
        raise refused(f"unverified email {email}", "your email address is not verified at the provider")
    domains = comma_list(settings.oidc_allowed_domains)
    if domains and email.rpartition("@")[2].lower() not in domains:
        raise refused(f"{email}: domain not allowed", "people of your email's domain may not sign in here")
    groups = set(comma_list(settings.oidc_allowed_groups))
    theirs = claims.get("groups") or []
    if groups and not groups & {str(group).lower() for group in (theirs if isinstance(theirs, list) else [theirs])}:
        raise refused(f"{email}: in none of the allowed groups", "you are in none of the groups that may sign in here")


def refused(cause: object, message: str) -> Forbidden:
    """Log why a sign-in failed, in full; return the refusal the person sees, without the details."""
    log.warning(
        "OpenID Connect sign-in refused: %s%s",
        f"{type(cause).__name__}: " if isinstance(cause, Exception) else "",
        cause,
    )
    return Forbidden(f"Signing in with {provider_name()} did not work: {message}.", code="sign_in_refused")


@oidc.errorhandler(Exception)
def refusal(exc: Exception):
    error = to_palaver_error(exc)
    page = render_template("sign_in_with.html", provider=provider_name(), next="", error=error)
    return page, error.status
