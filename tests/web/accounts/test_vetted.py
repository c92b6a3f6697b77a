"""People vouched for by a provider or a proxy: made active once, admins as PALAVER_ADMIN_EMAILS names them."""

import pytest

from palaver.core.errors import Forbidden
from palaver.web.accounts.vetted import vetted_person


def test_a_vetted_person_is_made_active_once_and_found_again(make_app, gguf_chat_model):
    app = make_app(gguf_chat_model, auth="header", auth_header="X-User", auth_proxies="127.0.0.1")
    with app.test_request_context():
        first = vetted_person("header:ada", "ada", "Ada")
        assert first.active and first.admin  # without PALAVER_ADMIN_EMAILS the first person is the admin
        again = vetted_person("header:ada", "ada")
        assert again.id == first.id
        other = vetted_person("header:grace", "grace")
        assert other.active and not other.admin


def test_admin_emails_make_admins_and_approve_them_and_a_disabled_person_stays_out(make_app, gguf_chat_model):
    app = make_app(
        gguf_chat_model, auth="header", auth_header="X-User", auth_proxies="127.0.0.1", admin_emails="boss@x.org"
    )
    store = app.extensions["palaver"].people
    with app.test_request_context():
        assert not vetted_person("header:ada@x.org", "ada@x.org").admin
        boss = store.create("boss@x.org", identity="header:boss@x.org")  # made before the setting named them
        assert not store.get(boss.id).active
        assert vetted_person("header:boss@x.org", "boss@x.org").admin
        assert store.get(boss.id).active
        store.set_state(boss.id, "disabled")
        with pytest.raises(Forbidden, match="disabled"):
            vetted_person("header:boss@x.org", "boss@x.org")
