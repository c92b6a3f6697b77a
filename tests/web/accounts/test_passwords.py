"""Sign-up and sign-in with a password: the admin first, approval after, errors on the form, throttles."""

from signing_in import PASSWORD, sign_in, sign_up

CHAT = {"message": "hi", "max_new_tokens": 2}


def test_the_first_to_sign_up_is_the_admin_and_chats_at_once_the_next_waits_for_approval(accounts_app):
    form = accounts_app.test_client().get("/sign-up").get_data(as_text=True)
    assert 'for="login"' in form and 'for="password"' in form and 'autocomplete="new-password"' in form
    ada = accounts_app.test_client()
    signed_up = sign_up(ada, "Ada", display_name="Ada Lovelace")
    assert signed_up.status_code == 303 and signed_up.headers["Location"] == "/"
    page = ada.get("/")
    assert page.status_code == 200 and 'id="account-link"' in page.get_data(as_text=True)
    assert "Ada Lovelace" in page.get_data(as_text=True) and 'id="people-link"' in page.get_data(as_text=True)
    assert ada.post("/api/chat", json=CHAT).status_code == 200
    grace = accounts_app.test_client()
    assert sign_up(grace, "grace").status_code == 303
    waiting = grace.get("/")
    text = waiting.get_data(as_text=True)
    assert waiting.status_code == 403 and "Waiting for approval" in text
    assert 'id="sign-out"' in text and 'id="account-link"' not in text
    refused = grace.post("/api/chat", json=CHAT)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "awaiting_approval"


def test_with_open_sign_up_a_new_person_chats_at_once(make_accounts_app):
    app = make_accounts_app(open_signup=True)
    sign_up(app.test_client(), "ada")
    grace = app.test_client()
    sign_up(grace, "grace")
    assert grace.get("/").status_code == 200 and grace.post("/api/chat", json=CHAT).status_code == 200
    assert "wait for the admin" not in app.test_client().get("/sign-up").get_data(as_text=True)


def test_a_wrong_password_shows_the_form_again_with_the_login_but_never_the_password(admin, accounts_app):
    client = accounts_app.test_client()
    refused = sign_in(client, "ada", "not the passphrase")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 401 and 'role="alert"' in text and "do not match" in text
    assert 'value="ada"' in text and "not the passphrase" not in text
    assert client.get("/").status_code == 303
    assert sign_in(client, "ADA", PASSWORD).status_code == 303 and client.get("/").status_code == 200


def test_sign_up_refuses_a_bad_login_a_short_password_and_a_taken_login_on_the_form(admin, accounts_app):
    client = accounts_app.test_client()
    for login, password, words in (
        ("a b", PASSWORD, "a login is"),
        ("x", PASSWORD, "a login is"),
        ("grace", "short", "8 to 1000"),
        ("ADA", PASSWORD, "is taken"),
    ):
        refused = sign_up(client, login, password, display_name="Grace")
        assert refused.status_code == 400 and words in refused.get_data(as_text=True)
        assert 'value="Grace"' in refused.get_data(as_text=True)


def test_sign_in_goes_back_to_the_page_asked_for_and_never_to_another_site(admin, accounts_app):
    client = accounts_app.test_client()
    asked = client.get("/account")
    assert asked.status_code == 303 and asked.headers["Location"] == "/sign-in?next=/account"
    assert 'name="next" value="/account"' in client.get("/sign-in?next=/account").get_data(as_text=True)
    assert sign_in(client, "ada", next="/account").headers["Location"] == "/account"
    for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert sign_in(client, "ada", next=elsewhere).headers["Location"] == "/"


def test_failed_sign_ins_are_throttled_per_address_and_sign_ups_count_too(make_accounts_app):
    app = make_accounts_app(sign_in_attempts="3/minute")
    sign_up(app.test_client(), "ada")  # one
    client = app.test_client()
    for _ in range(2):
        assert sign_in(client, "ada", "wrong passphrase").status_code == 401
    refused = sign_in(client, "ada")  # even the right password, once the address has spent its attempts
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert sign_up(client, "grace").status_code == 429


def test_a_disabled_person_is_told_so_only_with_the_right_password(admin, accounts_app):
    grace = accounts_app.test_client()
    sign_up(grace, "grace")
    people = accounts_app.extensions["palaver"].people
    people.set_state(people.by_login("grace").id, "disabled")
    assert sign_in(grace, "grace", "wrong passphrase").status_code == 401
    refused = sign_in(grace, "grace")
    assert refused.status_code == 403 and "disabled" in refused.get_data(as_text=True)
