"""Accounts against a real gunicorn server, as people use them: in Chromium (a laptop and a phone) and the official
openai client. The test-client checks of each module are in tests/web/accounts/."""

import re
from pathlib import Path

import openai
import pytest
import requests
from browsers import send, user_texts
from playwright import sync_api
from servers import client_at, start_server
from signing_in import PASSWORD, sign_in, sign_up

pytestmark = [pytest.mark.server, pytest.mark.browser]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def accounts_server(gguf_chat_model, tmp_path_factory):
    """A server with accounts on the tiny chat model as GGUF; its first account, the admin's, is made here."""
    with start_server(
        gguf_chat_model, tmp_path_factory.mktemp("accounts"), auth="accounts", max_new_tokens="4"
    ) as base_url:
        assert sign_up(requests.Session(), "ada", base=base_url).url == base_url + "/"
        yield base_url


def admin_session(base: str) -> requests.Session:
    session = requests.Session()
    assert sign_in(session, "ada", base=base).url == base + "/"
    return session


def serious_violations(page) -> list:
    """Run axe on the page (its context bypasses the page's policy to inject it); return serious and worse."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document)).violations"
        ".map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' '))}))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def sign_in_on(page, base: str, login: str, password: str = PASSWORD) -> None:
    page.goto(base + "/")
    sync_api.expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.fill("#login", login)
    page.fill("#password", password)
    page.click("#sign-in")


def session_cookie(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "session")


def test_a_person_signs_up_is_approved_and_sees_the_same_conversations_on_a_laptop_and_a_phone(
    chromium, accounts_server
):
    base = accounts_server
    laptop = chromium.new_context(viewport=LAPTOP, bypass_csp=True)
    page = laptop.new_page()
    page.goto(base + "/sign-up")
    assert serious_violations(page) == []
    page.fill("#login", "grace")
    page.fill("#display_name", "Grace Hopper")
    page.fill("#password", PASSWORD)
    page.click("#sign-up")
    sync_api.expect(page.locator("#waiting")).to_be_visible()
    assert serious_violations(page) == []

    admin = chromium.new_context(viewport=LAPTOP, bypass_csp=True).new_page()
    sign_in_on(admin, base, "ada")
    admin.click("#people-link")
    assert serious_violations(admin) == []
    admin.click("button[aria-label='Approve grace']")
    sync_api.expect(admin.locator("tr[data-login='grace'] .state")).to_have_text("active")

    page.goto(base + "/")
    send(page, "hello from the laptop", 1)
    phone_context = chromium.new_context(viewport=PHONE)
    phone = phone_context.new_page()
    sign_in_on(phone, base, "grace")
    sync_api.expect(phone).to_have_url(base + "/")
    before = session_cookie(phone_context)
    sign_in_on_again = phone_context.new_page()
    sign_in_on_again.goto(base + "/sign-in")
    sign_in_on_again.fill("#login", "grace")
    sign_in_on_again.fill("#password", PASSWORD)
    sign_in_on_again.click("#sign-in")
    sync_api.expect(sign_in_on_again).to_have_url(base + "/")
    assert session_cookie(phone_context) != before  # a new session at every sign-in; the old one ended
    stale = chromium.new_context()
    stale.add_cookies([{"name": "session", "value": before, "url": base}])
    stale_page = stale.new_page()
    stale_page.goto(base + "/")
    sync_api.expect(stale_page).to_have_url(re.compile(r"/sign-in$"))

    phone.goto(base + "/")
    listed = phone.locator("#conversation-list a")
    sync_api.expect(listed).to_have_count(1)
    phone.goto(base + listed.first.get_attribute("href"))
    assert user_texts(phone) == ["hello from the laptop"]

    page.goto(base + "/account")
    assert serious_violations(page) == []
    page.click("#sign-out-everywhere")
    sync_api.expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert serious_violations(page) == []
    phone.reload()
    sync_api.expect(phone).to_have_url(re.compile(r"/sign-in"))
    for context in (laptop, admin.context, phone_context, stale):
        context.close()


def test_repeated_failures_lock_the_account_from_every_address_and_no_other(accounts_server):
    base = accounts_server
    sign_up(requests.Session(), "linus", base=base)
    guesser = client_at("127.0.0.2")
    answers = [sign_in(guesser, "linus", "guess number one", base=base) for _ in range(5)]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 429]
    assert "locked" in answers[-1].text
    elsewhere = sign_in(client_at("127.0.0.3"), "linus", base=base)  # the right password, from another address
    assert elsewhere.status_code == 429 and int(elsewhere.headers["Retry-After"]) > 0
    assert sign_in(client_at("127.0.0.2"), "ada", base=base).url == base + "/"  # another account is not locked


def test_a_key_made_on_the_account_page_works_with_the_openai_client_until_revoked(accounts_server):
    base, admin = accounts_server, admin_session(accounts_server)
    made = admin.post(base + "/account/keys", data={"name": "script"})
    assert made.status_code == 201
    secret = re.search(r'id="new-key-secret" value="([^"]+)"', made.text).group(1)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0
    account = admin.get(base + "/account").text
    assert secret not in account and secret[:10] in account and "never" not in account  # used just now
    key_id = re.search(r"/account/keys/([0-9a-f]+)/revoke", account).group(1)
    assert admin.post(f"{base}/account/keys/{key_id}/revoke").url == base + "/account"
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.status_code == 401
    unauthenticated = openai.OpenAI(base_url=f"{base}/v1", api_key="pv-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthenticated.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_daily_token_quota_set_on_the_admin_page_is_enforced_on_v1_the_api_and_the_page(chromium, accounts_server):
    base, admin = accounts_server, admin_session(accounts_server)
    quinn = requests.Session()
    sign_up(quinn, "quinn", base=base)
    page = admin.get(base + "/admin/people").text
    quinn_id = re.search(r'/admin/people/([0-9a-f]+)/approve"[^>]*>\s*<button[^>]*aria-label="Approve quinn"', page)[1]
    admin.post(f"{base}/admin/people/{quinn_id}/approve")
    assert admin.post(f"{base}/admin/quotas/person/{quinn_id}", data={"tokens_per_day": "1"}).url.endswith("/people")
    made = quinn.post(base + "/account/keys", data={"name": "script"})
    secret = re.search(r'id="new-key-secret" value="([^"]+)"', made.text).group(1)
    assert quinn.post(base + "/api/chat", json={"message": "hi", "max_new_tokens": 2}).status_code == 200

    message = "your daily token quota of 1 is used up; it resets at 00:00 UTC"
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    model = client.models.list().data[0].id
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert message in str(refused.value) and int(refused.value.response.headers["Retry-After"]) > 0
    api = quinn.post(base + "/api/chat", json={"message": "hi"})
    assert api.status_code == 429 and api.json()["error"]["message"] == message

    context = chromium.new_context(viewport=LAPTOP, bypass_csp=True)
    browser = context.new_page()
    sign_in_on(browser, base, "quinn")
    browser.fill("#textbox", "hello")
    browser.press("#textbox", "Enter")
    sync_api.expect(browser.locator("#error")).to_contain_text(message)
    browser.goto(base + "/account")
    sync_api.expect(browser.locator("#your-quota")).to_contain_text("1 tokens a day")
    assert serious_violations(browser) == []
    sign_in_on_admin = context.new_page()
    context.clear_cookies()
    sign_in_on(sign_in_on_admin, base, "ada")
    admin.post(base + "/admin/groups", data={"name": "night class"})
    for path in ("/admin/people", "/admin/groups", "/admin/usage", f"/admin/quotas/person/{quinn_id}"):
        sign_in_on_admin.goto(base + path)
        assert serious_violations(sign_in_on_admin) == [], path
    sign_in_on_admin.goto(base + "/admin/usage")
    sync_api.expect(sign_in_on_admin.locator("#usage tr[data-login='quinn']")).to_have_count(1)
    context.close()


def test_the_sign_in_pages_pass_axe_with_their_errors_shown_and_so_does_the_oidc_one(
    chromium, accounts_server, make_app, gguf_chat_model
):
    page = chromium.new_context(viewport=PHONE, bypass_csp=True).new_page()
    sign_in_on(page, accounts_server, "nobody", "not the password")
    sync_api.expect(page.locator("#sign-in-error")).to_be_visible()
    assert serious_violations(page) == []
    page.goto(accounts_server + "/sign-up")
    page.fill("#login", "ada")  # taken
    page.fill("#password", PASSWORD)
    page.click("#sign-up")
    sync_api.expect(page.locator("#sign-up-error")).to_be_visible()
    assert serious_violations(page) == []
    # The OIDC page is rendered by an app of its own (its provider is read at the first sign-in, not here) and shown
    # on this server's origin, so that it has the same stylesheet.
    oidc = make_app(
        gguf_chat_model,
        auth="oidc",
        oidc_issuer="https://id.example.org",
        oidc_client_id="palaver",
        oidc_name="Example",
    )
    shown = oidc.test_client().get("/sign-in?next=/library")
    assert shown.status_code == 200
    page.set_content(shown.get_data(as_text=True))
    sync_api.expect(page.locator("#sign-in-with")).to_have_text("Sign in with Example")
    assert serious_violations(page) == []
    page.context.close()
