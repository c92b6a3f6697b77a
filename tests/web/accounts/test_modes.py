"""The sign-in modes: none adds nothing, accounts adds its pages, the modes not built yet refuse to start."""

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


@pytest.mark.parametrize("mode", ["oidc", "header"])
def test_a_mode_not_built_yet_refuses_to_start_and_says_so(mode):
    with pytest.raises(ConfigurationError, match=f"PALAVER_AUTH={mode} .* not built yet"):
        install_accounts(Flask("test"), Settings(auth=mode))
    with pytest.raises(ConfigurationError, match="PALAVER_AUTH"):
        Settings.from_env({"PALAVER_AUTH": "ldap"})
