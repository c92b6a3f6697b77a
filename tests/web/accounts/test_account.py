"""The account page: keys made, shown once, listed and revoked; signing out everywhere; a browser's conversations."""

import re

from signing_in import bearer, sign_in, sign_up
from stored import store_turn

BROWSER = "b" * 32


def create_key(client, name="laptop"):
    made = client.post("/account/keys", data={"name": name})
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    return re.search(r'id="new-key-secret" value="([^"]+)"', made.get_data(as_text=True)).group(1)


def test_a_key_is_shown_once_acts_as_its_person_and_stops_when_revoked(admin, accounts_app):
    secret = create_key(admin)
    assert secret.startswith("pv-")
    listed = admin.get("/account").get_data(as_text=True)
    assert secret[:10] in listed and secret not in listed and "never" in listed
    client = accounts_app.test_client(use_cookies=False)
    sent = client.post("/api/chat", json={"message": "by key", "max_new_tokens": 2}, headers=bearer(secret))
    assert sent.status_code == 200
    on_page = admin.get("/api/conversations").get_json()["conversations"]
    assert [c["conversation_id"] for c in on_page] == [sent.get_json()["conversation_id"]]  # the same person's
    assert "never" not in admin.get("/account").get_data(as_text=True)  # last used: now
    key_id = re.search(r"/account/keys/([0-9a-f]+)/revoke", admin.get("/account").get_data(as_text=True)).group(1)
    assert admin.post(f"/account/keys/{key_id}/revoke").status_code == 303
    refused = client.get("/api/conversations", headers=bearer(secret))
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "invalid_api_key"
    assert "revoked" in admin.get("/account").get_data(as_text=True)
    assert admin.post(f"/account/keys/{key_id}/revoke").status_code == 404


def test_a_key_needs_a_name_and_an_account_page_needs_a_person(admin, accounts_app):
    refused = admin.post("/account/keys", data={"name": "  "})
    assert refused.status_code == 400 and "name must be" in refused.get_data(as_text=True)
    assert accounts_app.test_client().post("/account/keys", data={"name": "x"}).status_code == 303
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    assert grace.post("/account/keys", data={"name": "x"}).status_code == 403  # waiting for approval
    assert grace.post("/sign-out").status_code == 303


def test_signing_out_everywhere_ends_every_browsers_session_but_keeps_the_keys(admin, accounts_app):
    phone = accounts_app.test_client()
    sign_in(phone, "ada")
    secret = create_key(phone)
    assert "Signed in on 2 browsers" in admin.get("/account").get_data(as_text=True)
    assert admin.post("/account/sign-out-everywhere").headers["Location"] == "/sign-in"
    assert phone.get("/").status_code == 303 and admin.get("/").status_code == 303
    assert accounts_app.test_client().get("/api/conversations", headers=bearer(secret)).status_code == 200


def test_a_browsers_own_conversations_are_offered_at_sign_in_and_added_only_when_asked(admin, accounts_app):
    store = accounts_app.extensions["palaver"].chat.store
    store_turn(store, "from-this-browser", "before accounts", owner=f"browser:{BROWSER}")
    store_turn(store, "from-another-browser", "not yours", owner=f"browser:{'c' * 32}")
    laptop = accounts_app.test_client()
    with laptop.session_transaction() as session:  # the cookie this browser had before accounts were turned on
        session["owner"] = BROWSER
    signed_in = sign_in(laptop, "ada")
    assert signed_in.headers["Location"] == "/account/claim"
    offer = laptop.get("/account/claim").get_data(as_text=True)
    assert "1 conversation from this browser" in offer
    assert laptop.get("/api/conversations").get_json()["conversations"] == []  # not taken unasked
    assert "1 conversation from this browser" in laptop.get("/account").get_data(as_text=True)
    assert admin.post("/account/claim").status_code == 303  # another browser of hers has nothing to add
    assert admin.get("/api/conversations").get_json()["conversations"] == []
    assert laptop.post("/account/claim").status_code == 303
    for browser in (laptop, admin):
        listed = browser.get("/api/conversations").get_json()["conversations"]
        assert [c["conversation_id"] for c in listed] == ["from-this-browser"]
    assert laptop.get("/account/claim").headers["Location"] == "/"  # nothing left to offer
    assert store.count_owned(f"browser:{'c' * 32}") == 1
