"""Signing in with OpenID Connect, end to end: a real gunicorn Palaver and a real provider (panva's oidc-provider,
tests/oidc_provider.mjs), driven over HTTP as a browser would, through the provider's redirects and back."""

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from servers import procfile_server, reserved_port, server_env

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[3]
CALLBACK = "/sign-in/oidc/callback"


@pytest.fixture(scope="module")
def oidc_server(gguf_chat_model, tmp_path_factory):
    """Yield (Palaver's server, the provider's issuer): Palaver lets in example.com and example.org, boss is admin."""
    with reserved_port() as port:
        redirect_uri = f"http://127.0.0.1:{port}{CALLBACK}"
        provider = subprocess.Popen(
            ["node", str(ROOT / "tests" / "oidc_provider.mjs"), redirect_uri],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert provider.stdout is not None
            issuer = json.loads(provider.stdout.readline())["issuer"]  # its first line, once it listens
            env = server_env(
                gguf_chat_model,
                tmp_path_factory.mktemp("oidc"),
                auth="oidc",
                oidc_issuer=issuer,
                oidc_client_id="palaver",
                oidc_client_secret="palaver-secret",
                oidc_name="Test provider",
                oidc_allowed_domains="example.com, example.org",
                admin_emails="boss@example.org",
                max_new_tokens="4",
            )
            with procfile_server(env, wait_for="/readyz", timeout=120, port=port, wait_for_exit=False) as server:
                yield server, issuer
        finally:
            provider.terminate()
            provider.wait(timeout=10)


def as_person(issuer: str, sub: str, email: str, **claims: str) -> None:
    """Make the provider's next sign-in this person."""
    assert requests.get(f"{issuer}/test/account", params={"sub": sub, "email": email, **claims}, timeout=10).ok


def up_to_callback(browser: requests.Session, base: str) -> str:
    """Start a sign-in and follow the provider's redirects; return the callback URL it sends back, not yet visited."""
    url = base + "/sign-in/oidc"
    for _ in range(20):
        if url.startswith(base + CALLBACK):
            return url
        answer = browser.get(url, allow_redirects=False, timeout=30)
        assert answer.is_redirect, (url, answer.status_code, answer.text[:500])
        url = requests.compat.urljoin(url, answer.headers["Location"])
    raise AssertionError("the provider never sent the browser back")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def signed_in(server, issuer: str, sub: str, email: str) -> requests.Session:
    as_person(issuer, sub, email)
    browser = requests.Session()
    landed = browser.get(server.url + "/sign-in/oidc", timeout=60)
    assert landed.status_code == 200 and landed.url == server.url + "/", landed.text[:500]
    return browser


def assert_refused(answer: requests.Response, says: str) -> None:
    assert answer.status_code == 403, answer.text[:500]
    page = answer.text
    assert "Signing in with Test provider did not work" in page and says in page and "Traceback" not in page


def test_a_person_signs_in_through_the_provider_and_chats_as_themselves_on_every_browser(oidc_server):
    server, issuer = oidc_server
    nobody = requests.get(server.url + "/", timeout=10)
    assert nobody.url == server.url + "/sign-in" and "Sign in with Test provider" in nobody.text

    laptop = signed_in(server, issuer, "ada-sub", "Ada@Example.com")
    sent = laptop.post(server.url + "/api/chat", json={"message": "Hello", "max_new_tokens": 2}, timeout=60)
    assert sent.status_code == 200, sent.text
    phone = signed_in(server, issuer, "ada-sub", "ada@example.com")  # the same subject: the same person
    seen = phone.get(server.url + "/api/conversations", timeout=10).json()["conversations"]
    assert [c["conversation_id"] for c in seen] == [sent.json()["conversation_id"]]
    assert "ada@example.com" in phone.get(server.url + "/account", timeout=10).text
    assert phone.get(server.url + "/admin/people", timeout=10).status_code == 403  # not named an admin

    boss = signed_in(server, issuer, "boss-sub", "boss@example.org")
    people = boss.get(server.url + "/admin/people", timeout=10)
    assert people.status_code == 200 and "ada@example.com" in people.text


def test_a_callback_with_another_state_is_refused(oidc_server):
    server, issuer = oidc_server
    as_person(issuer, "ada-sub", "ada@example.com")
    browser = requests.Session()
    forged = with_query(up_to_callback(browser, server.url), state="not-the-state-this-browser-was-given")
    assert_refused(browser.get(forged, timeout=30), "not started from this browser")
    assert "MismatchingStateError" in server.log()


def test_a_code_used_once_is_refused_the_second_time(oidc_server):
    server, issuer = oidc_server
    as_person(issuer, "ada-sub", "ada@example.com")
    victim = requests.Session()
    callback = up_to_callback(victim, server.url)
    assert victim.get(callback, timeout=30).url == server.url + "/"
    stolen_code = parse_qs(urlsplit(callback).query)["code"][0]

    thief = requests.Session()  # a sign-in of their own, with its own state, and the victim's code
    replayed = with_query(up_to_callback(thief, server.url), code=stolen_code)
    assert_refused(thief.get(replayed, timeout=30), "could not be verified")
    assert "invalid_grant" in server.log()
    assert thief.get(server.url + "/api/conversations", timeout=10).status_code == 401


def test_an_id_token_issued_to_another_client_is_refused(oidc_server):
    server, issuer = oidc_server
    as_person(issuer, "ada-sub", "ada@example.com")
    assert requests.get(f"{issuer}/test/swap-audience", params={"client": "other-app"}, timeout=10).ok
    browser = requests.Session()
    assert_refused(browser.get(server.url + "/sign-in/oidc", timeout=60), "could not be verified")
    assert "aud" in server.log().rpartition("OpenID Connect sign-in refused")[2].splitlines()[0]


@pytest.mark.parametrize(
    ("email", "claims", "says"),
    [
        ("mallory@elsewhere.net", {}, "domain may not sign in"),
        ("eve@example.com", {"email_verified": "false"}, "not verified"),
    ],
)
def test_a_person_the_settings_do_not_let_in_is_refused_and_not_made(oidc_server, email, claims, says):
    server, issuer = oidc_server
    as_person(issuer, email.partition("@")[0], email, **claims)
    browser = requests.Session()
    assert_refused(browser.get(server.url + "/sign-in/oidc", timeout=60), says)
    assert browser.get(server.url + "/", timeout=10).url == server.url + "/sign-in"
    boss = signed_in(server, issuer, "boss-sub", "boss@example.org")
    assert email not in boss.get(server.url + "/admin/people", timeout=10).text
