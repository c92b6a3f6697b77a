"""The sign-in modes: none adds nothing, each other mode its pages; a mode without its settings refuses to start."""

import pytest
from flask import Flask

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.web.accounts.modes import install_accounts


def test_without_accounts_there_are_no_account_pages_and_the_chat_is_as_it_was(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model).test_client()
    for path in ("/sign-in", "/sign-up", "/account", "/admin/people"):
        assert client.get(path).status_code == 404
    page = client.get("/").get_data(as_text=True)
    assert 'id="sign-out"' not in page and 'id="account-link"' not in page


def test_accounts_add_the_sign_in_sign_up_account_and_admin_pages(accounts_app):
    rules = {rule.rule for rule in accounts_app.url_map.iter_rules()}
    assert {"/sign-in", "/sign-up", "/sign-out", "/account", "/account/keys", "/admin/people"} <= rules


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"auth": "oidc"}, "PALAVER_OIDC_ISSUER and PALAVER_OIDC_CLIENT_ID"),
        ({"auth": "header", "auth_header": "X-Forwarded-Email"}, "PALAVER_AUTH_PROXIES"),
        ({"auth": "header", "auth_header": "X-Email", "auth_proxies": "10.0.0.300"}, "PALAVER_AUTH_PROXIES: "),
    ],
)
def test_a_mode_without_its_settings_refuses_to_start_and_names_them(settings, says):
    with pytest.raises(ConfigurationError, match=says):
        install_accounts(Flask("test"), Settings(**settings))
    with pytest.raises(ConfigurationError, match="PALAVER_AUTH"):
        Settings.from_env({"PALAVER_AUTH": "ldap"})


def test_oidc_adds_its_sign_in_page_and_reads_the_provider_only_at_the_first_sign_in(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, auth="oidc", oidc_issuer="https://id.example.com/realms/x", oidc_client_id="p")
    page = app.test_client().get("/sign-in")
    assert page.status_code == 200 and "Sign in with id.example.com" in page.get_data(as_text=True)
    assert app.test_client().get("/").headers["Location"].endswith("/sign-in")
