"""Apps with accounts on (PALAVER_AUTH=accounts), on the tiny GGUF chat model, and the admin's browser."""

import pytest
from signing_in import CHEAP_HASHER, sign_up


@pytest.fixture
def make_accounts_app(make_app, gguf_chat_model):
    """Create an app with accounts and settings as keyword arguments; its passwords are hashed at the least cost."""

    def make(**overrides):
        app = make_app(gguf_chat_model, auth="accounts", **overrides)
        app.extensions["palaver"].people.hasher = CHEAP_HASHER
        return app

    return make


@pytest.fixture
def accounts_app(make_accounts_app):
    return make_accounts_app()


@pytest.fixture
def admin(accounts_app):
    """A browser signed in as the first person to sign up: the admin."""
    client = accounts_app.test_client()
    assert sign_up(client, "ada").status_code == 303
    return client
